/* memmap: lays out the memory the Memory conformance suite expects, shifted
 * by an offset Z: Z+0x1000 holds 64 writable zero bytes that end a page,
 * Z+0x2000 16 read-only bytes 0..15 (the next page), nothing is mapped at
 * Z+0x3000, and Z-4 is in an inaccessible page. Prints Z in decimal, then
 * waits until stdin closes. Pages: 0,1 PROT_NONE, 2 rw, 3 r, 4 unmapped. */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    long pg = sysconf(_SC_PAGESIZE);
    char *b = mmap(NULL, 5 * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        return 1;
    if (mprotect(b + 2 * pg, 2 * pg, PROT_READ | PROT_WRITE))
        return 1;
    for (int i = 0; i < 16; i++)
        b[4 * pg - 64 + i] = (char)i;
    if (mprotect(b + 3 * pg, pg, PROT_READ) || munmap(b + 4 * pg, pg))
        return 1;
    /* Z + 0x1000 = b + 3*pg - 64 */
    printf("%lu\n", (unsigned long)(b + 3 * pg - 64 - 0x1000));
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
