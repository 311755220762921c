/*
 * keylog.c — TLS key logs from programs that have no SSLKEYLOGFILE support.
 *
 * Asterisk (chan_sip's tcptls and PJSIP's pjproject), baresip and SIPp use OpenSSL but
 * none of them writes the TLS secrets anywhere, so a capture of SIP over TLS cannot be
 * read.  Loaded with LD_PRELOAD, this library asks OpenSSL itself (≥ 1.1.1) to hand over
 * each secret as the handshake derives it: it wraps SSL_CTX_new() and SSL_new() and
 * installs a callback with SSL_CTX_set_keylog_callback().  OpenSSL gives the callback
 * ready-made lines in the NSS key log format ("CLIENT_RANDOM …" for TLS 1.2,
 * "CLIENT_HANDSHAKE_TRAFFIC_SECRET …" etc. for TLS 1.3) — the format Wireshark reads
 * (tls.keylog_file) and `editcap --inject-secrets tls,FILE` embeds.
 *
 * Build (on the host; no OpenSSL headers or libraries needed):
 *     gcc -shared -fPIC -O2 -Wall -o keylog.so keylog.c -Wl,--no-as-needed -l:libdl.so.2
 * (plain `... keylog.c -ldl` also works, see "Old glibc" below for the difference.)
 * Use:
 *     LD_PRELOAD=/path/keylog.so SSLKEYLOGFILE=/tmp/keys PROGRAM …
 * With SSLKEYLOGFILE unset or empty it does nothing.
 *
 * Design choices, each for a reason:
 * - Nothing from OpenSSL is linked: every OpenSSL function is looked up at run time with
 *   dlsym(RTLD_NEXT) (the next definition after this library: the real SSL_new) and
 *   dlsym(RTLD_DEFAULT) (whatever the program uses), so the same keylog.so works with
 *   OpenSSL 1.1.1 (libssl.so.1.1, bullseye image) and 3.x (libssl.so.3, modern image).
 *   If libssl was loaded privately (dlopen RTLD_LOCAL) it is found by soname instead.
 * - Old glibc: built on Debian 12 (glibc 2.36), dlsym/dlopen would bind to their
 *   GLIBC_2.34 versions (libdl was merged into libc in 2.34) and the library would not
 *   load on bullseye's glibc 2.31 ("version `GLIBC_2.34' not found").  The .symver lines
 *   below bind them to the GLIBC_2.2.5 versions that every x86-64 glibc has.  Check with
 *   `objdump -T keylog.so | grep GLIBC_` — nothing newer than 2.2.5/2.3.4/2.4.
 *   Before 2.34 those two live in libdl.so.2, and on glibc ≥ 2.34 `-ldl` links an empty
 *   libdl.a, so nothing pulls libdl.so.2 in.  Any OpenSSL 1.1.1 program has it anyway
 *   (libcrypto needs it) and lazy binding looks dlsym up only when SSL_new runs, but
 *   `-l:libdl.so.2` (a stub on new glibc) records it as NEEDED, so the library also loads
 *   under LD_BIND_NOW=1 into programs that never touch TLS.
 * - Safe with many threads and processes: the file is opened once (O_APPEND, mode 0600;
 *   the winner of a compare-and-swap keeps its descriptor) and each line goes out in ONE
 *   writev() call — the kernel appends it whole, so lines from threads and from forked or
 *   separate processes never interleave.  No stdio buffer: a line is on disk as soon as
 *   the secret exists (a crash or a SIGKILL loses nothing).
 * - A program that installs its own key log callback (openssl s_client -keylogfile) keeps
 *   it; this library does not replace it.
 * - x86-64 only as written (the symbol version names are per architecture).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__x86_64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");
#endif

typedef struct ssl_st SSL;              /* opaque: no OpenSSL headers needed */
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
typedef void (*keylog_cb)(const SSL *ssl, const char *line);

static int keylog_fd = -2;              /* -2: not opened yet; -1: off; else the file */

static int keylog_file(void)
{
    int fd = __atomic_load_n(&keylog_fd, __ATOMIC_ACQUIRE);
    if (fd != -2)
        return fd;
    const char *path = getenv("SSLKEYLOGFILE");
    int mine = -1;
    if (path != NULL && *path != '\0')
        mine = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    int expected = -2;
    if (__atomic_compare_exchange_n(&keylog_fd, &expected, mine, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return mine;
    if (mine >= 0)                      /* another thread was first: use its file */
        close(mine);
    return expected;
}

/* OpenSSL calls this with one NSS key log line (no newline) per secret. */
static void write_line(const SSL *ssl, const char *line)
{
    (void)ssl;
    int fd = keylog_file();
    if (fd < 0 || line == NULL)
        return;
    int saved = errno;
    struct iovec parts[2] = {{(void *)line, strlen(line)}, {"\n", 1}};
    while (writev(fd, parts, 2) < 0 && errno == EINTR)
        ;
    errno = saved;
}

/* The real OpenSSL function `name`: the next definition after ours, else the program's,
 * else from a privately loaded libssl. */
static void *real(const char *name, void *self)
{
    void *fn = dlsym(RTLD_NEXT, name);
    if (fn == NULL || fn == self)
        fn = dlsym(RTLD_DEFAULT, name);
    if (fn == NULL || fn == self) {
        static const char *const libs[] = {"libssl.so.3", "libssl.so.1.1", NULL};
        fn = NULL;
        for (int i = 0; fn == NULL && libs[i] != NULL; i++) {
            void *lib = dlopen(libs[i], RTLD_LAZY | RTLD_NOLOAD);
            if (lib != NULL)
                fn = dlsym(lib, name);
        }
    }
    return fn == self ? NULL : fn;
}

static void install(SSL_CTX *ctx)
{
    if (ctx == NULL || keylog_file() < 0)
        return;
    /* Both exist since OpenSSL 1.1.1; with an older libssl nothing is installed. */
    void (*set)(SSL_CTX *, keylog_cb) =
        (void (*)(SSL_CTX *, keylog_cb))real("SSL_CTX_set_keylog_callback", NULL);
    keylog_cb (*get)(const SSL_CTX *) =
        (keylog_cb(*)(const SSL_CTX *))real("SSL_CTX_get_keylog_callback", NULL);
    if (set == NULL)
        return;
    keylog_cb current = get != NULL ? get(ctx) : NULL;
    if (current == NULL || current == write_line)
        set(ctx, write_line);
}

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
{
    SSL_CTX *(*next)(const SSL_METHOD *) =
        (SSL_CTX * (*)(const SSL_METHOD *)) real("SSL_CTX_new", (void *)SSL_CTX_new);
    if (next == NULL)
        return NULL;
    SSL_CTX *ctx = next(method);
    install(ctx);
    return ctx;
}

/* The callback is read from the SSL's context when a secret is logged: (re)install it on
 * the context of every new connection, in case the context came from SSL_CTX_new_ex() or
 * the program replaced ours with NULL. */
SSL *SSL_new(SSL_CTX *ctx)
{
    SSL *(*next)(SSL_CTX *) = (SSL * (*)(SSL_CTX *)) real("SSL_new", (void *)SSL_new);
    if (next == NULL)
        return NULL;
    install(ctx);
    return next(ctx);
}
