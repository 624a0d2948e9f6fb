/*
 * outb PORT VALUE - write one byte to an x86 I/O port from user space.
 *
 * The guest's /init uses it to reach the VMM's boot-timer port (0x440) and
 * exit port (0x501); busybox has no applet for port I/O. PORT and VALUE are
 * decimal, 0x-hex or 0-octal. Needs root and CONFIG_X86_IOPL_IOPERM.
 * Built with `gcc -static` so the initramfs needs no shared libraries.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>

static int parse(const char *text, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    *out = strtoul(text, &end, 0);
    return errno == 0 && end != text && *end == '\0' && *out <= max;
}

int main(int argc, char **argv)
{
    unsigned long port, value;

    if (argc != 3 || !parse(argv[1], 0xffff, &port) || !parse(argv[2], 0xff, &value)) {
        fprintf(stderr, "usage: outb PORT VALUE   (PORT 0..0xffff, VALUE 0..0xff)\n");
        return 2;
    }
    /* Grant this process access to just that one port. */
    if (ioperm(port, 1, 1) != 0) {
        perror("outb: ioperm");
        return 1;
    }
    outb((unsigned char)value, (unsigned short)port);
    return 0;
}
