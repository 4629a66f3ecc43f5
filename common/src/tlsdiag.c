/* TLS file checks and connect-failure diagnosis (see tlsdiag.h): one OpenSSL
 * handshake of our own, with the same CA, host name and client certificate
 * that Paho was given, tells an untrusted broker certificate apart from an
 * expired own certificate, a refusal by the broker or a broker that is down. */
#include "tlsdiag.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define HOST_MAX 256
#define PORT_MAX 8

int upk__tls_url(const char *url)
{
    return url != NULL && (strncmp(url, "ssl://", 6) == 0 || strncmp(url, "mqtts://", 8) == 0);
}

__attribute__((format(printf, 3, 4))) static void say(char *why, size_t cap, const char *fmt, ...)
{
    if (why == NULL || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    (void)r; /* truncation only shortens a log line */
}

/* The first queued OpenSSL error as text (and the queue cleared). */
static const char *ssl_err_text(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0)
        return "no details";
    const char *r = ERR_reason_error_string(e);
    if (r != NULL)
        return r;
    ERR_error_string_n(e, buf, cap);
    return buf;
}

/* Loads the CA and our certificate/key into ctx. */
static upk_err load_files(SSL_CTX *ctx, const char *ca, const char *cert, const char *key,
                          char *why, size_t cap)
{
    char eb[160];
    if (ca == NULL || ca[0] == '\0') {
        say(why, cap, "ca_file is required for ssl:// brokers");
        return UPK_E_CONFIG_INVALID;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        say(why, cap, "ca_file %s: no readable certificate (%s)", ca, ssl_err_text(eb, sizeof(eb)));
        return UPK_E_CONFIG_INVALID;
    }
    if ((cert == NULL) != (key == NULL)) {
        say(why, cap, "cert_file and key_file go together");
        return UPK_E_CONFIG_INVALID;
    }
    if (cert == NULL)
        return UPK_OK;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        say(why, cap, "cert_file %s: no readable certificate (%s)", cert,
            ssl_err_text(eb, sizeof(eb)));
        return UPK_E_CONFIG_INVALID;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        say(why, cap, "key_file %s: no readable private key (%s)", key,
            ssl_err_text(eb, sizeof(eb)));
        return UPK_E_CONFIG_INVALID;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        say(why, cap, "key_file %s does not match cert_file %s", key, cert);
        ERR_clear_error();
        return UPK_E_CONFIG_INVALID;
    }
    return UPK_OK;
}

upk_err upk__tls_check_files(const char *ca_file, const char *cert_file, const char *key_file,
                             char *why, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        say(why, cap, "cannot create a TLS context");
        return UPK_E_CRYPTO;
    }
    upk_err err = load_files(ctx, ca_file, cert_file, key_file, why, cap);
    SSL_CTX_free(ctx);
    return err;
}

/* Splits "ssl://host:port" (host may be [v6]) into host and port. */
static int split_url(const char *url, char *host, char *port)
{
    const char *p = strstr(url, "://");
    if (p == NULL)
        return -1;
    p += 3;
    const char *hend, *colon;
    if (*p == '[') {
        p++;
        hend = strchr(p, ']');
        if (hend == NULL)
            return -1;
        colon = hend[1] == ':' ? hend + 1 : NULL;
    } else {
        colon = strrchr(p, ':');
        hend = colon != NULL ? colon : p + strlen(p);
    }
    size_t hlen = (size_t)(hend - p);
    if (hlen == 0 || hlen >= HOST_MAX)
        return -1;
    memcpy(host, p, hlen);
    host[hlen] = '\0';
    const char *pp = colon != NULL ? colon + 1 : "8883";
    size_t plen = strcspn(pp, "/");
    if (plen == 0 || plen >= PORT_MAX)
        return -1;
    memcpy(port, pp, plen);
    port[plen] = '\0';
    return 0;
}

/* A connected TCP socket with send/receive timeouts, or -1. */
static int tcp_connect(const char *host, const char *port, int timeout_ms)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
            continue;
        int ok = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
        if (!ok && errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            ok = poll(&pfd, 1, timeout_ms) == 1 &&
                 getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0;
        }
        if (!ok) {
            (void)close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    int fl = fcntl(fd, F_GETFL);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
        (void)close(fd);
        return -1;
    }
    return fd;
}

/* UPK_E_TLS_FAILED when our certificate is outside its validity period. */
static upk_err own_cert_valid(SSL_CTX *ctx, const char *cert, char *why, size_t cap)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (x == NULL)
        return UPK_OK;
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        say(why, cap, "our certificate %s has expired", cert);
        return UPK_E_TLS_FAILED;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        say(why, cap, "our certificate %s is not valid yet", cert);
        return UPK_E_TLS_FAILED;
    }
    return UPK_OK;
}

upk_err upk__tls_diagnose(const char *url, const char *ca_file, const char *cert_file,
                          const char *key_file, int timeout_ms, char *why, size_t cap)
{
    char host[HOST_MAX], port[PORT_MAX], eb[160];
    unsigned char addr[16];
    upk_err err = UPK_E_CONN;
    SSL *ssl = NULL;
    int fd = -1;
    if (url == NULL || split_url(url, host, port) != 0) {
        say(why, cap, "cannot parse broker URL %s", url != NULL ? url : "(null)");
        return UPK_E_CONFIG_INVALID;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        say(why, cap, "cannot create a TLS context");
        return UPK_E_CRYPTO;
    }
    if ((err = load_files(ctx, ca_file, cert_file, key_file, why, cap)) != UPK_OK)
        goto out;
    if ((err = own_cert_valid(ctx, cert_file, why, cap)) != UPK_OK)
        goto out;
    /* Verify by hand after the handshake so that the reason can be read. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    int is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host)
               : X509_VERIFY_PARAM_set1_host(param, host, 0)) != 1) {
        say(why, cap, "cannot set the host name %s to verify", host);
        err = UPK_E_CRYPTO;
        goto out;
    }
    fd = tcp_connect(host, port, timeout_ms);
    if (fd < 0) {
        say(why, cap, "no TCP connection to %s port %s", host, port);
        err = UPK_E_CONN;
        goto out;
    }
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 ||
        (!is_ip && SSL_set_tlsext_host_name(ssl, host) != 1)) {
        say(why, cap, "cannot set up a TLS session");
        err = UPK_E_CRYPTO;
        goto out;
    }
    int hs = SSL_connect(ssl);
    long vr = SSL_get_verify_result(ssl);
    if (hs == 1 || vr != X509_V_OK) {
        /* With SSL_VERIFY_NONE the handshake goes on past a bad certificate,
         * and the result says what is wrong with it. */
        if (SSL_get0_peer_certificate(ssl) == NULL) {
            say(why, cap, "the broker sent no certificate");
            err = UPK_E_TLS_UNTRUSTED;
            goto out;
        }
        if (vr != X509_V_OK) {
            say(why, cap, "broker certificate: %s (host %s)", X509_verify_cert_error_string(vr),
                host);
            err = UPK_E_TLS_UNTRUSTED;
            goto out;
        }
    }
    if (hs != 1) {
        say(why, cap, "TLS handshake failed: %s", ssl_err_text(eb, sizeof(eb)));
        err = UPK_E_TLS_FAILED;
        goto out;
    }
    /* TLS 1.3 sends the broker's verdict on our certificate after the
     * handshake: an alert on the first read. Silence until the timeout (the
     * broker waits for an MQTT CONNECT) means TLS itself is fine. */
    char b;
    int n = SSL_read(ssl, &b, 1);
    int se = n <= 0 ? SSL_get_error(ssl, n) : SSL_ERROR_NONE;
    if (n <= 0 && se == SSL_ERROR_SSL) {
        say(why, cap, "the broker refused the TLS session: %s", ssl_err_text(eb, sizeof(eb)));
        err = UPK_E_TLS_FAILED;
        goto out;
    }
    say(why, cap, "TLS to %s port %s works", host, port);
    err = UPK_OK;
out:
    ERR_clear_error();
    if (ssl != NULL)
        SSL_free(ssl);
    if (fd >= 0)
        (void)close(fd);
    SSL_CTX_free(ctx);
    return err;
}
