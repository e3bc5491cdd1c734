/*
 * xstate-shim.c - lets Debian 12's user-mode-linux (6.1) run on hosts whose
 * XSAVE area is larger than the one it was built for (AVX-512, AMX).
 *
 * UML saves and restores a guest thread's FPU state with
 * PTRACE_GETREGSET/PTRACE_SETREGSET(NT_X86_XSTATE) through a fixed buffer of
 * its own size. Reading into a short buffer is fine (the host truncates), but
 * the host accepts a write only of its whole XSAVE size and answers EFAULT
 * otherwise: the guest's first process dies ("ptrace set fp regs failed,
 * errno = 14", then "Attempted to kill init"). Later kernels size the buffer
 * from CPUID; this preload does the same for the 6.1 binary: a short
 * SETREGSET is widened to the host's size, UML's bytes first and the rest as
 * the thread has them now. So the components past UML's buffer (AVX-512's
 * upper registers, AMX) are not switched between threads of one guest
 * process: kernel-clients.sh tells the guests' C library not to use AVX-512.
 *
 * Built by kernel-clients.sh: cc -O2 -shared -fPIC -o xstate-shim.so xstate-shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef long (*ptrace_fn)(enum __ptrace_request, pid_t, void *, void *);

/* Larger than any XSAVE area (AMX makes it about 11 KiB). UML calls ptrace
 * from one thread only. */
static unsigned char full[64 * 1024] __attribute__((aligned(64)));

long ptrace(enum __ptrace_request request, ...)
{
    static ptrace_fn real;
    va_list ap;
    pid_t pid;
    void *addr, *data;

    va_start(ap, request);
    pid = va_arg(ap, pid_t);
    addr = va_arg(ap, void *);
    data = va_arg(ap, void *);
    va_end(ap);
    if (!real)
        real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");

    if (request == PTRACE_SETREGSET && (unsigned long)addr == NT_X86_XSTATE) {
        struct iovec *given = data;
        struct iovec whole = {full, sizeof full};
        long rc = real(PTRACE_GETREGSET, pid, addr, &whole);
        if (rc == 0 && whole.iov_len > given->iov_len) {
            memcpy(full, given->iov_base, given->iov_len);
            return real(PTRACE_SETREGSET, pid, addr, &whole);
        }
    }
    return real(request, pid, addr, data);
}
