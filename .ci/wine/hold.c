/*
 * hold.exe PATH SECONDS: opens PATH the way a media player or a virus scanner does on
 * Windows (sharing reading and writing, not deletion), says "held" on stdout, keeps it
 * open for SECONDS and closes it. While it holds the file, renaming, replacing or deleting
 * it fails with a sharing violation, which is what the end-to-end suite
 * (scripts/windows-e2e.sh) needs at swap time. Wine enforces sharing modes only between
 * Windows processes, so the holder must be one. Built with the mingw compiler for the
 * suite only; never part of what ships.
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>

int wmain(int argc, wchar_t **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: hold.exe PATH SECONDS\n");
        return 2;
    }
    HANDLE file = CreateFileW(argv[1], GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL,
                              OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "hold.exe: cannot open the file (error %lu)\n", GetLastError());
        return 1;
    }
    printf("held\n");
    fflush(stdout);
    Sleep((DWORD)_wtoi(argv[2]) * 1000);
    CloseHandle(file);
    return 0;
}
