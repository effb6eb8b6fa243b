/* The host port: the firmware as a POSIX program, serving a pty or a TCP port the way
 * `mark1 device` serves the simulator (firmware_sim/serve.py):
 *
 *   - the first line on stdout is the URL to open (/dev/pts/N or socket://HOST:PORT);
 *   - one host at a time: on TCP a second connection gets NAK BUSY to its first frame and is
 *     closed; a pty is locked by the host that opens it;
 *   - a session ends after --idle-timeout seconds with no byte either way (TCP: the
 *     connection is closed; pty: replies not sent are dropped);
 *   - a TCP session ends when its host closes the connection, at once: what the host sent and
 *     the device has not received yet is dropped with it (POLLRDHUP tells of the close before
 *     those bytes are read);
 *   - a HELLO starts a new conversation: replies not sent yet are dropped before its INFO;
 *   - short replies go ahead of queued READ_DATA replies (at frame boundaries);
 *   - the flash lives in --state FILE (the simulator's state-file format); --cut-after N[+K]
 *     cuts the power K bytes into flash operation N (counted from 0 since power-on): the
 *     program stops at once (exit status 3) with the flash as the cut left it.
 *
 * SIGINT or SIGTERM stop it cleanly (exit status 0). Bad options: one line, exit status 2.
 */
#define _DEFAULT_SOURCE
#define _GNU_SOURCE /* POLLRDHUP */
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

#ifndef POLLRDHUP /* not Linux: the close is seen once the host's bytes are read */
#define POLLRDHUP 0
#endif

#define WIRE_MAX (MK_COBS_MAX(MK_REPLY_MAX + MK_FRAME_OVERHEAD) + 1u)
#define QUEUE_BYTES (1u << 20)
#define MAX_BUSY 8
#define LINE_BUFFER (16u << 20) /* bytes taken from the host ahead of the line: more than a \
                                   connection holds in flight, so that a close behind them is \
                                   seen at once (the simulator's LINE_BUFFER) */
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

/* ------------------------------------------------------------------ the line's clock */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static double byte_us;          /* line time of one byte (10 bits at --baud); 0 = unpaced */
static uint64_t turnaround_us;  /* from a request's last byte to its reply's first */
#define QUANTUM 32u             /* bytes moved at a time on a paced line */

/* ------------------------------------------------------------------ reply queues */

typedef struct { /* encoded replies: length (4 bytes), time it may start (8), the bytes */
    uint8_t buf[QUEUE_BYTES];
    uint32_t head, tail; /* byte positions, wrapping */
} queue;

static uint32_t queue_used(const queue *q) { return q->tail - q->head; }

static void queue_copy(queue *q, uint32_t at, uint8_t *p, uint32_t n, int in)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        if (in) {
            q->buf[(at + i) % QUEUE_BYTES] = p[i];
        } else {
            p[i] = q->buf[(at + i) % QUEUE_BYTES];
        }
    }
}

static void queue_push(queue *q, const uint8_t *wire, uint32_t n, uint64_t ready)
{
    uint8_t head[12];
    mk_put32(head, n);
    mk_put32(head + 4, (uint32_t)ready);
    mk_put32(head + 8, (uint32_t)(ready >> 32));
    queue_copy(q, q->tail, head, 12, 1);
    queue_copy(q, q->tail + 12u, (uint8_t *)wire, n, 1);
    q->tail += 12u + n;
}

static uint32_t queue_pop(queue *q, uint8_t *out, uint64_t *ready) /* 0 if empty */
{
    uint8_t head[12];
    uint32_t n;
    if (queue_used(q) == 0) {
        return 0;
    }
    queue_copy(q, q->head, head, 12, 0);
    n = mk_le32(head);
    *ready = mk_le32(head + 4) | (uint64_t)mk_le32(head + 8) << 32;
    queue_copy(q, q->head + 12u, out, n, 0);
    q->head += 12u + n;
    return n;
}

/* ------------------------------------------------------------------ one session */

typedef struct {
    int fd;
    queue control, bulk;
    uint8_t sending[WIRE_MAX];
    uint32_t send_len, send_pos;
    uint64_t send_ready;        /* the reply being sent may not start before this */
    int send_clocked;           /* its line time has started */
    uint64_t tx_clock;          /* end of the line time of the bytes sent so far */
    uint32_t stage_at, staged;  /* line_buffer[stage_at:][:staged]: bytes taken from the host
                                   and not yet through the (paced) line */
    uint64_t rx_clock;          /* end of the line time of the bytes passed on so far */
    uint64_t arrival;           /* when the bytes being handled finished arriving */
    uint32_t last_active;
} session;

static mk_device device;
static host_flash flash;
static session sess;
static uint8_t line_buffer[LINE_BUFFER];

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
    queue_push(type == MK_READ_DATA ? &s->bulk : &s->control, wire, (uint32_t)n,
               s->arrival + turnaround_us);
}

static void session_start(session *s, int fd)
{
    s->fd = fd;
    drop_unsent(s);
    s->send_len = s->send_pos = 0;
    s->stage_at = s->staged = 0;
    s->last_active = mk_hal_millis();
    mk_device_new_session(&device);
}

/* Bytes the device may take now: room for the replies to them (each frame takes 11 bytes at
 * least) in the queues. */
static uint32_t feedable_bytes(const session *s)
{
    uint32_t used = queue_used(&s->control) + queue_used(&s->bulk);
    uint32_t free_bytes = QUEUE_BYTES - (used > QUEUE_BYTES ? QUEUE_BYTES : used);
    return free_bytes / (WIRE_MAX + 12u) * 11u;
}

/* Pass staged bytes through the line to the device: all it may take when unpaced, else a
 * quantum whenever its line time has passed. Returns when the next quantum is due (0: none). */
static uint64_t session_feed(session *s, uint64_t now)
{
    while (s->staged) {
        uint32_t room = feedable_bytes(s);
        uint32_t n = byte_us > 0 && s->staged > QUANTUM ? QUANTUM : s->staged;
        uint64_t due;
        n = n < room ? n : room;
        if (n == 0) { /* the host does not read its replies: wait for it */
            return 0;
        }
        due = s->rx_clock + (uint64_t)(n * byte_us);
        if (byte_us > 0 && due > now) {
            return due;
        }
        s->rx_clock = byte_us > 0 ? due : now;
        s->arrival = s->rx_clock;
        mk_device_receive(&device, line_buffer + s->stage_at, n, emit, s);
        s->stage_at += n;
        s->staged -= n;
        s->last_active = mk_hal_millis();
    }
    s->stage_at = 0;
    return 0;
}

/* Take what the host sent, up to LINE_BUFFER ahead of the line; -1 when the host has gone. */
static int session_read(session *s, uint64_t now)
{
    uint32_t room;
    ssize_t n;
    if (s->stage_at > LINE_BUFFER / 2) { /* make room at the end */
        memmove(line_buffer, line_buffer + s->stage_at, s->staged);
        s->stage_at = 0;
    }
    room = LINE_BUFFER - s->stage_at - s->staged;
    if (room == 0) {
        return 0;
    }
    n = read(s->fd, line_buffer + s->stage_at + s->staged, room < 65536u ? room : 65536u);
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR || errno == EIO ? 0 : -1;
    }
    if (n == 0) {
        return -1;
    }
    if (s->staged == 0 && s->rx_clock < now) { /* the line was idle: its clock starts now */
        s->rx_clock = now;
    }
    s->staged += (uint32_t)n;
    s->last_active = mk_hal_millis();
    return 0;
}

static int session_wants_write(const session *s)
{
    return s->send_pos < s->send_len || queue_used(&s->control) || queue_used(&s->bulk);
}

/* Send what the host takes and the line allows; -1 when the host has gone. Sets *due to when
 * more may go (0: nothing waits for time). */
static int session_write(session *s, uint64_t now, uint64_t *due)
{
    *due = 0;
    while (1) {
        ssize_t n;
        uint32_t len;
        if (s->send_pos == s->send_len) {
            s->send_pos = 0;
            s->send_len = queue_pop(&s->control, s->sending, &s->send_ready);
            if (!s->send_len) {
                s->send_len = queue_pop(&s->bulk, s->sending, &s->send_ready);
            }
            if (!s->send_len) {
                return 0;
            }
            s->send_clocked = 0;
        }
        if (s->send_ready > now) {
            *due = s->send_ready;
            return 0;
        }
        len = s->send_len - s->send_pos;
        if (byte_us > 0) {
            uint64_t end;
            if (!s->send_clocked) { /* the line was idle since the last reply: its clock restarts */
                s->send_clocked = 1;
                s->tx_clock = s->tx_clock > now ? s->tx_clock : now;
            }
            len = len < QUANTUM ? len : QUANTUM;
            end = s->tx_clock + (uint64_t)(len * byte_us);
            if (end > now) {
                *due = end;
                return 0;
            }
            s->tx_clock = end;
        }
        n = write(s->fd, s->sending + s->send_pos, len);
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
    uint32_t cut_keep, protocol_version, baud;
    double turnaround_ms;
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
          "       [--name NAME] [--endurance N] [--cut-after N[+K]] [--protocol-version V]\n"
          "       [--baud BAUD] [--turnaround MS]\n",
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
        } else if (!strcmp(a, "--baud")) {
            o.baud = (uint32_t)number(a, v, 0, 100000000);
        } else if (!strcmp(a, "--turnaround")) {
            char *end;
            o.turnaround_ms = strtod(v, &end);
            if (end == v || *end || !(o.turnaround_ms >= 0.0 && o.turnaround_ms < 10000.0)) {
                die("--turnaround: milliseconds, 0 to 10000", 0);
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
    if (why) {
        die(why, 0);
    }
    flash.flash.cut_op = o.cut_op;
    flash.flash.cut_keep = o.cut_keep;
    memset(&config, 0, sizeof config);
    config.max_payload = o.max_payload;
    config.ram_bytes = o.ram;
    config.protocol_version = o.protocol_version;
    strcpy(config.name, o.name);
    if ((why = mk_device_init(&device, &config, &flash.flash.hal)) != 0) {
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
            "mark1 device: %s (C firmware, host port), %u B flash in %u B pages, %u B RAM, %s, ",
            o.name, o.flash, o.page, o.ram,
            device.has_active ? (device.active.slot ? "model in slot B" : "model in slot A")
                              : "no model");
    if (o.baud) {
        fprintf(stderr, "%u baud, turnaround %g ms, ", o.baud, o.turnaround_ms);
    } else {
        fprintf(stderr, "unpaced, ");
    }
    if (o.idle > 0) {
        fprintf(stderr, "idle timeout %g s", o.idle);
    } else {
        fprintf(stderr, "no idle timeout");
    }
    fprintf(stderr, "%s%s; serving %s until stopped (Ctrl-C)\n", o.state ? ", state " : "",
            o.state ? o.state : "", url);

    byte_us = o.baud ? 1e7 / o.baud : 0.0;
    turnaround_us = (uint64_t)(o.turnaround_ms * 1000.0);
    while (!stopping) {
        struct pollfd fds[2 + MAX_BUSY];
        int n = 0, s_at = -1, l_at = -1, b_at[MAX_BUSY], timeout = POLL_MS;
        uint64_t now = now_us(), feed_due = 0, write_due = 0;
        uint32_t millis;
        if (sess.fd >= 0) { /* the line: bytes due to the device, replies due to the host */
            feed_due = session_feed(&sess, now);
            if (session_write(&sess, now, &write_due) < 0 && !o.pty) {
                close(sess.fd);
                sess.fd = -1;
            }
        }
        if (listener >= 0) {
            l_at = n;
            fds[n].fd = listener;
            fds[n++].events = POLLIN;
        }
        if (sess.fd >= 0) {
            s_at = n;
            fds[n].fd = sess.fd;
            fds[n++].events = (short)((sess.stage_at + sess.staged < LINE_BUFFER ? POLLIN : 0) |
                                      (session_wants_write(&sess) && !write_due ? POLLOUT : 0) |
                                      (o.pty ? 0 : POLLRDHUP));
        }
        for (k = 0; k < MAX_BUSY; k++) {
            b_at[k] = -1;
            if (busy_hosts[k].fd >= 0) {
                b_at[k] = n;
                fds[n].fd = busy_hosts[k].fd;
                fds[n++].events = POLLIN;
            }
        }
        for (k = 0; k < 2; k++) { /* wake for the line's next event */
            uint64_t due = k ? write_due : feed_due;
            if (due) {
                int ms = due > now ? (int)((due - now + 999u) / 1000u) : 0;
                timeout = ms < timeout ? ms : timeout;
            }
        }
        if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) {
            die("poll", strerror(errno));
        }
        if (stopping) {
            break;
        }
        now = now_us();
        if (s_at >= 0 && sess.fd >= 0) {
            short ev = fds[s_at].revents;
            int gone = !o.pty && (ev & POLLRDHUP); /* the host closed: its unread bytes go too */
            if (!gone && (ev & (POLLIN | POLLHUP | POLLERR))) {
                gone = session_read(&sess, now) < 0;
            }
            if (!gone) {
                session_feed(&sess, now);
                gone = session_write(&sess, now, &write_due) < 0;
            }
            if (gone && !o.pty) {
                close(sess.fd);
                sess.fd = -1;
            }
        }
        millis = mk_hal_millis();
        if (sess.fd >= 0 && idle_ms && millis - sess.last_active > idle_ms) {
            if (o.pty) { /* nobody to tell: forget the conversation */
                session_start(&sess, sess.fd);
            } else {
                close(sess.fd);
                sess.fd = -1;
            }
        }
        for (k = 0; k < MAX_BUSY; k++) {
            if (b_at[k] >= 0 && busy_hosts[k].fd >= 0 &&
                (fds[b_at[k]].revents & (POLLIN | POLLHUP | POLLERR))) {
                busy_read(&busy_hosts[k]);
            }
            if (busy_hosts[k].fd >= 0 && millis - busy_hosts[k].since > BUSY_MS) {
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
