/*
 * body.c - message content encoder: CRLF normalisation, dot-stuffing and
 * the 998-octet line limit, streaming and without I/O.
 *
 * Every bare CR or LF becomes CRLF, so no receiver can see a line end other
 * than ours, and a line that starts with '.' is doubled, so the content can
 * never contain "CRLF . CRLF" before tm__body_finish (SMTP smuggling,
 * CVE-2023-51764).  Lines that would exceed 998 octets are broken with
 * CRLF SP, as Postfix does.
 *
 * Speed matters: the content is the bulk of what a session moves.  Three
 * paths, fastest first:
 *  - copy_blocks: 64-byte blocks of typical content (short lines, CRLF or
 *    LF line ends) copied and checked with vector compares (x86: SSE2,
 *    AVX2 or AVX-512BW, chosen at run time);
 *  - copy_run: a run of ordinary bytes (all but CR, LF, NUL) copied while
 *    scanned, 16 bytes at a time with SSE2, 8 with word arithmetic;
 *  - one byte at a time for line ends, line starts and breaks.
 * Each path hands over to the next where it cannot decide, so the exact
 * rules live in the byte-wise path only.
 */
#include <string.h>

#include "internal.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

void tm__body_init(tm_body *b)
{
    if (b == NULL)
        return;
    b->line_len = 0;
    b->at_bol = 1;
    b->pending_cr = 0;
    b->raw = 0;
}

#if defined(__GNUC__)
#define TM_CTZ32(x) ((size_t)__builtin_ctz(x))
#define TM_CTZ64(x) ((size_t)__builtin_ctzll(x))
#endif

/* Copies in[0..n) to out while no byte is CR, LF or NUL; returns how many
 * were copied.  Stores never reach past out[n). */
static size_t copy_run(const unsigned char *in, unsigned char *out, size_t n)
{
    size_t k = 0;

#if defined(__SSE2__) && defined(TM_CTZ32)
    {
        const __m128i cr = _mm_set1_epi8('\r');
        const __m128i lf = _mm_set1_epi8('\n');
        const __m128i zero = _mm_setzero_si128();

        while (n - k >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(in + k));
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)),
                                     _mm_cmpeq_epi8(v, zero));
            unsigned int mask = (unsigned int)_mm_movemask_epi8(m);

            _mm_storeu_si128((__m128i *)(void *)(out + k), v);
            if (mask != 0)
                return k + TM_CTZ32(mask);
            k += 16;
        }
    }
#elif defined(TM_CTZ64)
    {
        /* "Has a zero byte" on the word xor'ed with each special byte. */
        const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
        const uint64_t crs = ones * '\r', lfs = ones * '\n';

        while (n - k >= 8) {
            uint64_t v, a, c, z, m;

            memcpy(&v, in + k, 8);
            a = v ^ crs;
            c = v ^ lfs;
            z = ((v - ones) & ~v) | ((a - ones) & ~a) | ((c - ones) & ~c);
            m = z & highs;
            memcpy(out + k, &v, 8);
            if (m != 0) {
                /* The lowest flagged byte is exact; stop there and let the
                 * byte loop below settle it.  Little-endian only. */
                const union {
                    uint16_t u;
                    unsigned char c[2];
                } e = {1};
                if (e.c[0] == 1)
                    return k + TM_CTZ64(m) / 8;
                break;
            }
            k += 8;
        }
    }
#endif
    while (k < n && in[k] != '\r' && in[k] != '\n' && in[k] != '\0') {
        out[k] = in[k];
        k++;
    }
    return k;
}

#if defined(__GNUC__) && defined(__SSE2__) && (defined(__x86_64__) || defined(__i386__))
#define TM_BODY_BLOCKS 1
/*
 * The common case: lines well under the limit, none starting with '.', no
 * NUL, line ends CRLF (content already in wire form) or bare LF (a Unix
 * file).  Whole 64-byte blocks are copied and checked, and a CR is put
 * before each bare LF by storing the rest of the block again one byte
 * further.  The checks are branch-free: line ends fall anywhere in a block,
 * and a branch on them would mispredict about once a line.  The first
 * block that does not pass (a bare CR, a CR at the block's end, a dot or a
 * NUL, a long line) is left to the exact paths.
 *
 * The loop is written once and compiled three times, differing only in
 * how the byte masks of a block are made: SSE2 (every x86-64), AVX2 and
 * AVX-512BW.
 */
typedef struct tm_masks {
    uint64_t cr, lf, nul, dot; /* bit i: byte i of the block is that byte */
} tm_masks;

static void masks_sse2(const unsigned char *p, tm_masks *m)
{
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    const __m128i dot = _mm_set1_epi8('.'), zero = _mm_setzero_si128();
    int i;

    m->cr = m->lf = m->nul = m->dot = 0;
    for (i = 0; i < 4; i++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i));
        m->cr |= (uint64_t)(unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, cr)) << (16 * i);
        m->lf |= (uint64_t)(unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf)) << (16 * i);
        m->nul |= (uint64_t)(unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, zero)) << (16 * i);
        m->dot |= (uint64_t)(unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v, dot)) << (16 * i);
    }
}

__attribute__((target("avx2"))) static void masks_avx2(const unsigned char *p, tm_masks *m)
{
    const __m256i cr = _mm256_set1_epi8('\r'), lf = _mm256_set1_epi8('\n');
    const __m256i dot = _mm256_set1_epi8('.'), zero = _mm256_setzero_si256();
    __m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)p);
    __m256i hi = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32));

#define TM_MASK64(c) \
    ((uint64_t)(unsigned int)_mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, c)) | \
     (uint64_t)(unsigned int)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, c)) << 32)
    m->cr = TM_MASK64(cr);
    m->lf = TM_MASK64(lf);
    m->nul = TM_MASK64(zero);
    m->dot = TM_MASK64(dot);
#undef TM_MASK64
}

__attribute__((target("avx512bw"))) static void masks_avx512(const unsigned char *p, tm_masks *m)
{
    __m512i v = _mm512_loadu_si512((const void *)p);

    m->cr = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\r'));
    m->lf = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\n'));
    m->nul = _mm512_cmpeq_epi8_mask(v, _mm512_setzero_si512());
    m->dot = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('.'));
}

/* Reads reach in[k + 127] (the byte after the block, and the re-stores
 * after an LF); writes reach out[o + 191] (64 LFs in a block).  Returns the
 * bytes produced, *consumed the bytes consumed, keeps b->line_len; called
 * in the middle of a line with no CR pending. */
#define TM_COPY_BLOCKS(name, attr, masks)                                                   \
    attr static size_t name(tm_body *b, const unsigned char *in, size_t inlen,             \
                            size_t *consumed, unsigned char *out, size_t outcap)            \
    {                                                                                       \
        size_t k = 0, o = 0, line = b->line_len;                                            \
        while (inlen - k >= 128 && outcap - o >= 192) {                                     \
            tm_masks m;                                                                     \
            uint64_t bad, bare;                                                             \
            size_t first, extra = 0;                                                        \
            masks(in + k, &m);                                                              \
            bad = m.nul | (m.cr & ~(m.lf >> 1)); /* a CR not followed by LF */              \
            bad |= m.dot & (m.lf << 1);          /* a '.' after an LF */                    \
            bad |= (m.lf >> 63) & (uint64_t)(in[k + 64] == '.');                            \
            first = m.lf != 0 ? (size_t)__builtin_ctzll(m.lf) : 64;                         \
            if (bad != 0 || line + first > TM_BODY_LINE_MAX)                                \
                break;                                                                      \
            memcpy(out + o, in + k, 64);                                                    \
            for (bare = m.lf & ~(m.cr << 1); bare != 0; bare &= bare - 1) {                 \
                size_t p = (size_t)__builtin_ctzll(bare);                                   \
                out[o + p + extra++] = '\r';                                                \
                memcpy(out + o + p + extra, in + k + p, 64);                                \
            }                                                                               \
            line = m.lf != 0 ? (size_t)__builtin_clzll(m.lf) : line + 64;                   \
            k += 64;                                                                        \
            o += 64 + extra;                                                                \
        }                                                                                   \
        b->line_len = line;                                                                 \
        *consumed = k;                                                                      \
        return o;                                                                           \
    }

TM_COPY_BLOCKS(copy_blocks_sse2, , masks_sse2)
TM_COPY_BLOCKS(copy_blocks_avx2, __attribute__((target("avx2"))), masks_avx2)
TM_COPY_BLOCKS(copy_blocks_avx512, __attribute__((target("avx512bw"))), masks_avx512)

/* TM_BODY_ISA caps the variant for tests: 0 none (exact paths only),
 * 1 SSE2, 2 AVX2, 3 AVX-512BW; by default the best the CPU has. */
#ifndef TM_BODY_ISA
#define TM_BODY_ISA 3
#endif

static size_t copy_blocks(tm_body *b, const unsigned char *in, size_t inlen, size_t *consumed,
                          unsigned char *out, size_t outcap)
{
    if (TM_BODY_ISA >= 3 && __builtin_cpu_supports("avx512bw"))
        return copy_blocks_avx512(b, in, inlen, consumed, out, outcap);
    if (TM_BODY_ISA >= 2 && __builtin_cpu_supports("avx2"))
        return copy_blocks_avx2(b, in, inlen, consumed, out, outcap);
    if (TM_BODY_ISA >= 1)
        return copy_blocks_sse2(b, in, inlen, consumed, out, outcap);
    *consumed = 0;
    return 0;
}
#endif

int tm__body_encode(tm_body *b, const unsigned char *in, size_t inlen, size_t *consumed,
                   unsigned char *out, size_t outcap, size_t *produced)
{
    size_t i = 0, o = 0;
    int rc = TM_OK;

    if (consumed != NULL)
        *consumed = 0;
    if (produced != NULL)
        *produced = 0;
    if (b == NULL || consumed == NULL || produced == NULL || (in == NULL && inlen > 0) ||
        out == NULL || outcap < 4)
        return TM_EINVAL;

    while (i < inlen && outcap - o >= 4) {
        unsigned char c;

        if (!b->at_bol && !b->pending_cr && b->line_len < TM_BODY_LINE_MAX) {
            /* Middle of a line: copy ordinary bytes up to the line limit. */
            size_t n, run;

#if defined(TM_BODY_BLOCKS)
            o += copy_blocks(b, in + i, inlen - i, &run, out + o, outcap - o);
            i += run;
#endif
            n = inlen - i;

            if (n > outcap - o)
                n = outcap - o;
            if (n > TM_BODY_LINE_MAX - b->line_len)
                n = TM_BODY_LINE_MAX - b->line_len;
            run = copy_run(in + i, out + o, n);
            i += run;
            o += run;
            b->line_len += run;
            if (i == inlen || outcap - o < 4)
                break;
        }

        c = in[i];
        if (c == '\0') {
            rc = TM_ECONTENT;
            break;
        }
        if (c == '\r') {
            if (b->pending_cr) { /* the previous CR was bare */
                out[o++] = '\r';
                out[o++] = '\n';
                b->line_len = 0;
                b->at_bol = 1;
            }
            b->pending_cr = 1;
            i++;
            continue;
        }
        if (c == '\n' || b->pending_cr) {
            out[o++] = '\r';
            out[o++] = '\n';
            b->line_len = 0;
            b->at_bol = 1;
            b->pending_cr = 0;
            if (c == '\n') {
                i++;
                /* The next line starts with an ordinary byte: straight
                 * back to the copying path. */
                if (i < inlen && in[i] != '.' && in[i] != '\r' && in[i] != '\n' && in[i] != '\0')
                    b->at_bol = 0;
                continue;
            }
        }
        if (b->at_bol) {
            b->at_bol = 0;
            if (c == '.' && !b->raw) {
                out[o++] = '.';
                b->line_len++;
            }
        } else if (b->line_len >= TM_BODY_LINE_MAX) {
            out[o++] = '\r';
            out[o++] = '\n';
            out[o++] = ' ';
            b->line_len = 1;
        }
        out[o++] = c;
        b->line_len++;
        i++;
    }
    *consumed = i;
    *produced = o;
    return rc;
}

size_t tm__body_finish(tm_body *b, unsigned char *out)
{
    size_t o = 0;
    int raw;

    if (b == NULL || out == NULL)
        return 0;
    if (b->pending_cr || !b->at_bol) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    if (!b->raw) {
        out[o++] = '.';
        out[o++] = '\r';
        out[o++] = '\n';
    }
    raw = b->raw;
    tm__body_init(b);
    b->raw = raw;
    return o;
}
