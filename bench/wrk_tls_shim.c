/* LD_PRELOAD shim for wrk's TLS connections: counts full vs resumed handshakes and can
 * turn session resumption off.
 *
 * wrk (4.1.0) closes a connection with SSL_shutdown() + SSL_clear() and reuses the same
 * SSL object for the next connection. SSL_clear() keeps the negotiated session, so the next
 * handshake offers it (TLS 1.3 PSK / TLS 1.2 ticket or session id) and servers resume it:
 * `wrk -H "Connection: close"` then measures resumed handshakes, not full ones.
 *
 *   WRK_NO_RESUME=1  drop the session after every SSL_clear(): every connection makes a full
 *                    handshake (certificate, signature and key exchange)
 *   always           at exit, print to stderr how many connections wrk closed and how many
 *                    of them had resumed a session (SSL_session_reused), e.g.
 *                    "tls-shim: closed=23456 resumed=23400 no_resume=0"
 *
 *   gcc -O2 -shared -fPIC -o wrk_tls_shim.so bench/wrk_tls_shim.c -lssl -ldl
 *   WRK_NO_RESUME=1 LD_PRELOAD=$PWD/wrk_tls_shim.so wrk -H "Connection: close" https://...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/ssl.h>

static unsigned long closed, resumed;
static int no_resume = -1;

int SSL_clear(SSL *s) {
    static int (*real)(SSL *) = 0;
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    if (no_resume < 0) {
        const char *v = getenv("WRK_NO_RESUME");
        no_resume = v && *v && *v != '0';
    }
    if (SSL_is_init_finished(s)) {
        closed++;
        if (SSL_session_reused(s)) resumed++;
    }
    int r = real(s);
    if (no_resume) SSL_set_session(s, NULL);
    return r;
}

__attribute__((destructor)) static void report(void) {
    if (closed) fprintf(stderr, "tls-shim: closed=%lu resumed=%lu no_resume=%d\n", closed, resumed, no_resume > 0);
}
