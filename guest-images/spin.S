/* An init that never makes a system call: it spins in user mode. On the nested kvm_pvm backend, where
 * guest user space cannot enter the kernel, it keeps the guest kernel alive and serving interrupts
 * (network, console) instead of panicking because init died. */
.globl _start
_start:
1:  pause
    jmp 1b
