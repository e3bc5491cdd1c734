/*
 * bcryptprimitives.dll for Wine 8 (Debian 12), which has none.
 *
 * Rust's std (1.78 and later) on Windows takes its random numbers from ProcessPrng in
 * bcryptprimitives.dll, present on Windows 10 and later. Wine 8 lacks the DLL, so every Rust
 * test binary fails to start under it. .ci/run builds this one-function stand-in with the
 * mingw compiler into its private Wine prefix, only when Wine has no DLL of that name. It
 * is never part of what ships.
 */
#include <windows.h>

/* advapi32's RtlGenRandom, which Wine has. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
