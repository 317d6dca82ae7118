/* common/random.c - identifiers that cannot be guessed (session, task, markers). */
#define _GNU_SOURCE
#include "common/random.h"

#include <stdint.h>
#include <sys/random.h>

void cq_random_id(char *out, size_t n)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    uint8_t bytes[128];
    size_t done = 0;
    while (done < n) {
        size_t want = n - done < sizeof(bytes) ? n - done : sizeof(bytes);
        ssize_t got = getrandom(bytes, want, 0);
        if (got <= 0)
            continue; /* EINTR; the CSPRNG does not fail otherwise once initialised */
        for (ssize_t i = 0; i < got && done < n; i++) {
            /* 62 symbols: reject 248..255 so every symbol is equally likely. */
            if (bytes[i] >= 248)
                continue;
            out[done++] = alphabet[bytes[i] % 62];
        }
    }
    out[n] = '\0';
}
