/* The host port: the firmware as a POSIX program, serving a pty or a TCP port the way
 * `mark1 device` serves the simulator (firmware_sim/serve.py):
 *
 *   - the first line on stdout is the URL to open (/dev/pts/N or socket://HOST:PORT);
 *   - one host at a time: on TCP a second connection gets NAK BUSY to its first frame and is
 *     closed; a pty is locked by the host that opens it;
 *   - a session ends after --idle-timeout seconds with no byte either way (TCP: the
 *     connection is closed; pty: replies not sent are dropped);
 *   - a HELLO starts a new conversation: replies not sent yet are dropped before its INFO;
 *   - short replies go ahead of queued READ_DATA replies (at frame boundaries);
 *   - the flash lives in --state FILE (the simulator's state-file format); --cut-after N[+K]
 *     cuts the power K bytes into flash operation N (counted from 0 since power-on): the
 *     program stops at once (exit status 3) with the flash as the cut left it.
 *
 * SIGINT or SIGTERM stop it cleanly (exit status 0). Bad options: one line, exit status 2.
 */
#define _DEFAULT_SOURCE
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "host_flash.h"

#define WIRE_MAX (MK_COBS_MAX(MK_REPLY_MAX + MK_FRAME_OVERHEAD) + 1u)
#define QUEUE_BYTES (1u << 20)
#define MAX_BUSY 8
#define BUSY_MS 2000u
#define POLL_MS 50

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

uint32_t mk_hal_millis(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "mark1 device: error: %s%s%s\n", what, why ? ": " : "", why ? why : "");
    exit(2);
}

/* ------------------------------------------------------------------ reply queues */

typedef struct { /* encoded replies, each as a 4-byte length then its bytes */
    uint8_t buf[QUEUE_BYTES];
    uint32_t head, tail; /* byte positions, wrapping */
} queue;

static uint32_t queue_used(const queue *q) { return q->tail - q->head; }

static void queue_copy_in(queue *q, const uint8_t *p, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        q->buf[(q->tail + i) % QUEUE_BYTES] = p[i];
    }
    q->tail += n;
}

static void queue_push(queue *q, const uint8_t *wire, uint32_t n)
{
    uint8_t len[4];
    mk_put32(len, n);
    queue_copy_in(q, len, 4);
    queue_copy_in(q, wire, n);
}

static uint32_t queue_pop(queue *q, uint8_t *out) /* 0 if empty */
{
    uint8_t len[4];
    uint32_t n, i;
    if (queue_used(q) == 0) {
        return 0;
    }
    for (i = 0; i < 4; i++) {
        len[i] = q->buf[(q->head + i) % QUEUE_BYTES];
    }
    n = mk_le32(len);
    for (i = 0; i < n; i++) {
        out[i] = q->buf[(q->head + 4u + i) % QUEUE_BYTES];
    }
    q->head += 4u + n;
    return n;
}

/* ------------------------------------------------------------------ one session */

typedef struct {
    int fd;
    queue control, bulk;
    uint8_t sending[WIRE_MAX];
    uint32_t send_len, send_pos;
    uint32_t last_active;
} session;

static mk_device device;
static host_flash flash;
static session sess;

static void drop_unsent(session *s)
{
    s->control.head = s->control.tail;
    s->bulk.head = s->bulk.tail;
}

static void emit(void *ctx, uint8_t type, const uint8_t *wire, size_t n)
{
    session *s = ctx;
    if (type == MK_INFO) { /* the answer to a HELLO: a new conversation */
        drop_unsent(s);
    }
    queue_push(type == MK_READ_DATA ? &s->bulk : &s->control, wire, (uint32_t)n);
}

static void session_start(session *s, int fd)
{
    s->fd = fd;
    drop_unsent(s);
    s->send_len = s->send_pos = 0;
    s->last_active = mk_hal_millis();
    mk_device_new_session(&device);
}

/* Room for the replies to `n` more received bytes (each frame takes 11 bytes at least). */
static uint32_t readable_bytes(const session *s)
{
    uint32_t used = queue_used(&s->control) + queue_used(&s->bulk);
    uint32_t free_bytes = QUEUE_BYTES - (used > QUEUE_BYTES ? QUEUE_BYTES : used);
    uint32_t frames = free_bytes / (WIRE_MAX + 4u);
    return frames * 11u > 4096u ? 4096u : frames * 11u;
}

/* Receive what is there; -1 when the host has gone. */
static int session_read(session *s)
{
    uint8_t buf[4096];
    uint32_t room = readable_bytes(s);
    ssize_t n;
    if (room == 0) {
        return 0;
    }
    n = read(s->fd, buf, room);
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR || errno == EIO ? 0 : -1;
    }
    if (n == 0) {
        return -1;
    }
    s->last_active = mk_hal_millis();
    mk_device_receive(&device, buf, (size_t)n, emit, s);
    return 0;
}

static int session_wants_write(const session *s)
{
    return s->send_pos < s->send_len || queue_used(&s->control) || queue_used(&s->bulk);
}

/* Send what the host takes; -1 when the host has gone. */
static int session_write(session *s)
{
    while (1) {
        ssize_t n;
        if (s->send_pos == s->send_len) {
            s->send_pos = 0;
            s->send_len = queue_pop(&s->control, s->sending);
            if (!s->send_len) {
                s->send_len = queue_pop(&s->bulk, s->sending);
            }
            if (!s->send_len) {
                return 0;
            }
        }
        n = write(s->fd, s->sending + s->send_pos, s->send_len - s->send_pos);
        if (n < 0) {
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        }
        s->send_pos += (uint32_t)n;
        s->last_active = mk_hal_millis();
    }
}

/* ------------------------------------------------------------------ a busy port (TCP) */

typedef struct {
    int fd;
    uint32_t since;
    mk_rx rx;
    uint8_t buf[MK_COBS_MAX(0xFFFFu + MK_FRAME_OVERHEAD)];
} busy;

static busy busy_hosts[MAX_BUSY];

static void refuse(int fd)
{
    int k;
    for (k = 0; k < MAX_BUSY; k++) {
        if (busy_hosts[k].fd < 0) {
            busy_hosts[k].fd = fd;
            busy_hosts[k].since = mk_hal_millis();
            mk_rx_init(&busy_hosts[k].rx, busy_hosts[k].buf, 0xFFFFu);
            return;
        }
    }
    close(fd);
}

static void busy_read(busy *b)
{
    uint8_t buf[4096];
    ssize_t n = read(b->fd, buf, sizeof buf), i;
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            close(b->fd);
            b->fd = -1;
        }
        return;
    }
    for (i = 0; i < n; i++) {
        mk_frame f;
        if (mk_rx_byte(&b->rx, buf[i], &f)) {
            uint8_t out[160];
            size_t len = mk_busy_reply(&f, out);
            if (write(b->fd, out, len) < 0) {
                /* the host is gone already */
            }
            close(b->fd);
            b->fd = -1;
            return;
        }
    }
}

/* ------------------------------------------------------------------ options */

typedef struct {
    int pty;
    const char *listen;
    uint32_t flash, page, ram, max_payload;
    const char *state, *name;
    double idle;
    int64_t endurance, cut_op;
    uint32_t cut_keep, protocol_version;
} options;

static uint64_t number(const char *opt, const char *text, uint64_t lo, uint64_t hi)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v < lo || v > hi) {
        fprintf(stderr, "mark1 device: error: %s %s: a whole number in [%llu, %llu]\n", opt, text,
                (unsigned long long)lo, (unsigned long long)hi);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fputs("usage: mark1-fw-host (--pty | --listen HOST:PORT) [--flash BYTES] [--page BYTES]\n"
          "       [--ram BYTES] [--max-payload BYTES] [--state FILE] [--idle-timeout S]\n"
          "       [--name NAME] [--endurance N] [--cut-after N[+K]] [--protocol-version V]\n",
          stderr);
    exit(2);
}

static options parse(int argc, char **argv)
{
    options o;
    int i;
    memset(&o, 0, sizeof o);
    o.flash = 256u * 1024u;
    o.page = 2048u;
    o.ram = 64u * 1024u;
    o.max_payload = 1024u;
    o.idle = 30.0;
    o.endurance = 10000;
    o.cut_op = -1;
    o.name = "mark1-fw host";
    o.protocol_version = MK_PROTOCOL_VERSION;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : 0;
        if (!strcmp(a, "--pty")) {
            o.pty = 1;
            continue;
        }
        if (!v) {
            usage();
        }
        i++;
        if (!strcmp(a, "--listen")) {
            o.listen = v;
        } else if (!strcmp(a, "--flash")) {
            o.flash = (uint32_t)number(a, v, 1, 0xFFFFFFFFu);
        } else if (!strcmp(a, "--page")) {
            o.page = (uint32_t)number(a, v, 1, 0xFFFFFFFFu);
        } else if (!strcmp(a, "--ram")) {
            o.ram = (uint32_t)number(a, v, 1, MK_ARENA_BYTES);
        } else if (!strcmp(a, "--max-payload")) {
            o.max_payload = (uint32_t)number(a, v, 64, MK_MAX_PAYLOAD);
        } else if (!strcmp(a, "--state")) {
            o.state = v;
        } else if (!strcmp(a, "--name")) {
            o.name = v;
        } else if (!strcmp(a, "--idle-timeout")) {
            char *end;
            o.idle = strtod(v, &end);
            if (end == v || *end || !(o.idle >= 0.0 && o.idle < 1e9)) {
                die("--idle-timeout: a number of seconds >= 0 (0 = never)", 0);
            }
        } else if (!strcmp(a, "--endurance")) {
            o.endurance = (int64_t)number(a, v, 0, 0x7FFFFFFF);
        } else if (!strcmp(a, "--protocol-version")) {
            o.protocol_version = (uint32_t)number(a, v, 0, 0xFFFF);
        } else if (!strcmp(a, "--cut-after")) {
            char op[32];
            const char *plus = strchr(v, '+');
            size_t len = plus ? (size_t)(plus - v) : strlen(v);
            if (len == 0 || len >= sizeof op) {
                die("--cut-after: OPERATIONS[+BYTES], e.g. 7 or 7+100", 0);
            }
            memcpy(op, v, len);
            op[len] = 0;
            o.cut_op = (int64_t)number(a, op, 0, 0x7FFFFFFFFFFFull);
            o.cut_keep = plus ? (uint32_t)number(a, plus + 1, 0, 0xFFFFFFFFu) : 0;
        } else {
            usage();
        }
    }
    if (o.pty == !!o.listen) {
        die("give one of --pty and --listen HOST:PORT", 0);
    }
    if (strlen(o.name) > MK_NAME_MAX) {
        die("--name: at most 64 bytes", 0);
    }
    return o;
}

/* ------------------------------------------------------------------ ports */

static int listen_on(const char *spec, char *url, size_t url_len)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints, *res;
    struct sockaddr_storage addr;
    socklen_t alen = sizeof addr;
    int fd, one = 1, err;
    char port_text[16];
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host) {
        die("--listen: expected HOST:PORT", spec);
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    number("--listen port", colon + 1, 0, 65535);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if ((err = getaddrinfo(host, colon + 1, &hints, &res)) != 0) {
        die("cannot listen", gai_strerror(err));
    }
    fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0) {
        die("cannot listen", strerror(errno));
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 8) != 0) {
        fprintf(stderr, "mark1 device: error: cannot listen on %s: %s\n", spec, strerror(errno));
        exit(2);
    }
    freeaddrinfo(res);
    getsockname(fd, (struct sockaddr *)&addr, &alen);
    getnameinfo((struct sockaddr *)&addr, alen, host, sizeof host, port_text, sizeof port_text,
                NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(url, url_len, "socket://%s:%s", host, port_text);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int open_pty(int *slave, char *url, size_t url_len)
{
    struct termios tio;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    const char *name;
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0 || !(name = ptsname(master))) {
        die("cannot open a pty", strerror(errno));
    }
    snprintf(url, url_len, "%s", name);
    *slave = open(name, O_RDWR | O_NOCTTY); /* kept open: hosts may come and go */
    if (*slave < 0 || tcgetattr(*slave, &tio) != 0) {
        die("cannot open the pty's slave", strerror(errno));
    }
    cfmakeraw(&tio);
    tcsetattr(*slave, TCSANOW, &tio);
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    return master;
}

/* ------------------------------------------------------------------ main loop */

int main(int argc, char **argv)
{
    options o = parse(argc, argv);
    mk_device_config config;
    char url[300];
    const char *why;
    int listener = -1, slave = -1, k;
    uint32_t idle_ms = (uint32_t)(o.idle * 1000.0);
    struct sigaction sa;

    why = host_flash_open(&flash, o.flash, o.page, o.state, o.endurance);
    if (!why && (o.page < 32u || (o.page & (o.page - 1u)))) {
        why = "the page size must be a power of two of at least 32 bytes";
    }
    if (!why && (o.flash % o.page || o.flash / o.page < 4u)) {
        why = "the flash size must be a multiple of the page size and hold at least 4 pages";
    }
    if (why) {
        die(why, 0);
    }
    flash.cut_op = o.cut_op;
    flash.cut_keep = o.cut_keep;
    memset(&config, 0, sizeof config);
    config.max_payload = o.max_payload;
    config.ram_bytes = o.ram;
    config.protocol_version = o.protocol_version;
    strcpy(config.name, o.name);
    if ((why = mk_device_init(&device, &config, &flash.hal)) != 0) {
        die(why, 0);
    }

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, 0);
    sigaction(SIGTERM, &sa, 0);
    signal(SIGPIPE, SIG_IGN);
    for (k = 0; k < MAX_BUSY; k++) {
        busy_hosts[k].fd = -1;
    }
    sess.fd = -1;
    if (o.pty) {
        session_start(&sess, open_pty(&slave, url, sizeof url));
    } else {
        listener = listen_on(o.listen, url, sizeof url);
    }
    printf("%s\n", url);
    fflush(stdout);
    fprintf(stderr,
            "mark1 device: %s (firmware, host port), %u B flash in %u B pages, %u B RAM, %s, "
            "%s; serving %s until stopped (Ctrl-C)\n",
            o.name, o.flash, o.page, o.ram, device.has_active ? "a model in flash" : "no model",
            o.idle > 0 ? "idle timeout on" : "no idle timeout", url);

    while (!stopping) {
        struct pollfd fds[2 + MAX_BUSY];
        int n = 0, s_at = -1, l_at = -1, b_at[MAX_BUSY];
        uint32_t now;
        if (listener >= 0) {
            l_at = n;
            fds[n].fd = listener;
            fds[n++].events = POLLIN;
        }
        if (sess.fd >= 0) {
            s_at = n;
            fds[n].fd = sess.fd;
            fds[n++].events = (short)((readable_bytes(&sess) ? POLLIN : 0) |
                                      (session_wants_write(&sess) ? POLLOUT : 0));
        }
        for (k = 0; k < MAX_BUSY; k++) {
            b_at[k] = -1;
            if (busy_hosts[k].fd >= 0) {
                b_at[k] = n;
                fds[n].fd = busy_hosts[k].fd;
                fds[n++].events = POLLIN;
            }
        }
        if (poll(fds, (nfds_t)n, POLL_MS) < 0 && errno != EINTR) {
            die("poll", strerror(errno));
        }
        if (stopping) {
            break;
        }
        if (s_at >= 0) {
            short ev = fds[s_at].revents;
            int gone = 0;
            if (ev & POLLOUT) {
                gone = session_write(&sess) < 0;
            }
            if (!gone && (ev & (POLLIN | POLLHUP | POLLERR))) {
                gone = session_read(&sess) < 0;
                if (!gone && session_wants_write(&sess)) {
                    gone = session_write(&sess) < 0;
                }
            }
            if (gone && !o.pty) {
                close(sess.fd);
                sess.fd = -1;
            }
        }
        now = mk_hal_millis();
        if (sess.fd >= 0 && idle_ms && now - sess.last_active > idle_ms) {
            if (o.pty) { /* nobody to tell: forget the conversation */
                session_start(&sess, sess.fd);
            } else {
                close(sess.fd);
                sess.fd = -1;
            }
        }
        for (k = 0; k < MAX_BUSY; k++) {
            if (b_at[k] >= 0 && (fds[b_at[k]].revents & (POLLIN | POLLHUP | POLLERR))) {
                busy_read(&busy_hosts[k]);
            }
            if (busy_hosts[k].fd >= 0 && now - busy_hosts[k].since > BUSY_MS) {
                close(busy_hosts[k].fd);
                busy_hosts[k].fd = -1;
            }
        }
        if (l_at >= 0 && (fds[l_at].revents & POLLIN)) {
            int fd = accept(listener, 0, 0);
            if (fd >= 0) {
                int one = 1;
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                if (sess.fd >= 0) {
                    refuse(fd);
                } else {
                    session_start(&sess, fd);
                }
            }
        }
    }
    if (sess.fd >= 0) {
        close(sess.fd);
    }
    if (slave >= 0) {
        close(slave);
    }
    if (listener >= 0) {
        close(listener);
    }
    host_flash_close(&flash);
    return 0;
}
