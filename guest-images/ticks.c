/*
 * ticks FILE PORT - a guest program whose progress the host can check across a live migration, a
 * snapshot and restore, or a failover.
 *
 * Every 100 ms it takes one tick: it checks that its 8 MiB buffer still holds the previous tick's
 * pattern (memory carried over intact), fills it with this tick's, appends "VMM-TICK N CHAIN" to FILE
 * and makes that durable (fdatasync), and only then prints the same line on the console. CHAIN
 * folds every tick number so far into one value, so a tick lost or repeated anywhere breaks it. So
 * the console never shows a tick the disk lacks, and the console and FILE read 1, 2, 3, ... with no
 * gap and no repeat, whatever host the VM ran on in between.
 * A UDP datagram "stop" to PORT ends it: it prints "VMM-TICKS-DONE N CHAIN" and exits 0. On a
 * corrupted buffer or a failed write it says so and exits 1.
 * Built with `gcc -static`: one exec, no shared libraries.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFFER_WORDS (8u << 20) / sizeof(uint64_t)
#define TICK_MS 100

static uint64_t buffer[BUFFER_WORDS];

static uint64_t pattern(uint64_t tick, size_t index)
{
    return (tick << 32) ^ (index * 0x9e3779b97f4a7c15ull);
}

static uint32_t chain_next(uint32_t chain, uint64_t tick)
{
    return chain * 1000003u ^ (uint32_t)tick;
}

static int write_all(int fd, const char *text, size_t length)
{
    while (length > 0) {
        ssize_t written = write(fd, text, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return -1;
        text += written;
        length -= (size_t)written;
    }
    return 0;
}

int main(int argc, char **argv)
{
    char *end;
    unsigned long port = argc == 3 ? strtoul(argv[2], &end, 10) : 0;
    if (argc != 3 || *end != '\0' || port == 0 || port > 65535) {
        fprintf(stderr, "usage: ticks FILE PORT\n");
        return 2;
    }
    int file = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
    if (file < 0) {
        perror("ticks: open");
        return 1;
    }
    int control = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (control < 0 || bind(control, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("ticks: UDP socket");
        return 1;
    }

    uint32_t chain = 0;
    char line[64];
    for (uint64_t tick = 1;; tick++) {
        for (size_t i = 0; i < BUFFER_WORDS; i++) {
            if (tick > 1 && buffer[i] != pattern(tick - 1, i)) {
                printf("VMM-TICKS-MEMORY-CORRUPT at tick %llu, word %zu\n", (unsigned long long)tick, i);
                return 1;
            }
            buffer[i] = pattern(tick, i);
        }
        chain = chain_next(chain, tick);
        int length = snprintf(line, sizeof line, "VMM-TICK %llu %08x\n", (unsigned long long)tick, chain);
        if (write_all(file, line, (size_t)length) != 0 || fdatasync(file) != 0) {
            printf("VMM-TICKS-WRITE-FAILED at tick %llu: %s\n", (unsigned long long)tick, strerror(errno));
            return 1;
        }
        if (write_all(STDOUT_FILENO, line, (size_t)length) != 0)
            return 1;

        struct pollfd wait = { .fd = control, .events = POLLIN };
        if (poll(&wait, 1, TICK_MS) > 0) {
            char word[16];
            ssize_t received = recv(control, word, sizeof word, 0);
            if (received >= 4 && memcmp(word, "stop", 4) == 0) {
                printf("VMM-TICKS-DONE %llu %08x\n", (unsigned long long)tick, chain);
                return 0;
            }
        }
    }
}
