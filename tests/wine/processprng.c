/*
 * Test scaffolding for running echowarp.exe under Wine 8, never shipped: Rust's std asks
 * bcryptprimitives.dll for ProcessPrng (present on Windows 10 and later), which Wine 8 lacks.
 * This DLL, placed beside the exe in a test's temporary folder, provides it from the system's
 * RtlGenRandom. tests/windows.rs builds it with x86_64-w64-mingw32-gcc.
 */
#include <windows.h>

/* RtlGenRandom is exported by advapi32 as SystemFunction036. */
BOOLEAN NTAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
