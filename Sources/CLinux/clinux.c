#include "clinux.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sched.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/vm_sockets.h>
#include <unistd.h>

#define RET(expr) do { int _r = (expr); return _r < 0 ? -errno : _r; } while (0)

int cl_epoll_create(void) { RET(epoll_create1(EPOLL_CLOEXEC)); }

int cl_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev = { .events = events, .data.u64 = token };
    RET(epoll_ctl(epfd, op, fd, &ev));
}

int cl_epoll_wait(int epfd, cl_event *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        events[i].events = evs[i].events;
        events[i].token = evs[i].data.u64;
    }
    return n;
}

int cl_eventfd(void) { RET(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)); }

int cl_eventfd_signal(int fd) {
    uint64_t one = 1;
    RET((int)write(fd, &one, sizeof one));
}

int cl_eventfd_drain(int fd) {
    uint64_t v;
    RET((int)read(fd, &v, sizeof v));
}

static int fill_addr(const char *path, struct sockaddr_un *addr, socklen_t *len) {
    size_t n = strlen(path);
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (n == 0 || n >= sizeof addr->sun_path) return -ENAMETOOLONG;
    memcpy(addr->sun_path, path, n);
    if (path[0] == '@') addr->sun_path[0] = '\0';  // abstract namespace
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));
    return 0;
}

// A fresh non-blocking, close-on-exec AF_UNIX stream socket and the address for path.
static int unix_socket(const char *path, struct sockaddr_un *addr, socklen_t *len) {
    int r = fill_addr(path, addr, len);
    if (r < 0) return r;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

static int fail_closing(int fd) {
    int e = errno;
    close(fd);
    return -e;
}

int cl_unix_listen(const char *path, int backlog) {
    struct sockaddr_un addr;
    socklen_t len;
    int fd = unix_socket(path, &addr, &len);
    if (fd < 0) return fd;
    if (bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, backlog) < 0) return fail_closing(fd);
    return fd;
}

int cl_unix_connect(const char *path) {
    struct sockaddr_un addr;
    socklen_t len;
    int fd = unix_socket(path, &addr, &len);
    if (fd < 0) return fd;
    if (connect(fd, (struct sockaddr *)&addr, len) < 0) return fail_closing(fd);
    return fd;
}

int cl_vsock_connect(unsigned int cid, unsigned int port) {
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) return fail_closing(fd);
    return fd;
}

int cl_vsock_listen(unsigned int port, int backlog) {
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, backlog) < 0) return fail_closing(fd);
    return fd;
}

int cl_socketpair(int fds[2]) {
    RET(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds));
}

int cl_accept(int listen_fd) { RET(accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)); }

int cl_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -errno;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

void cl_malloc_keep_large_blocks(void) {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

long cl_splice(int in, int out, unsigned long len) {
    ssize_t n;
    do { n = splice(in, NULL, out, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (long)n;
}

int cl_readable_bytes(int fd) {
    int n = 0;
    return ioctl(fd, FIONREAD, &n) < 0 ? -errno : n;
}

int cl_hung_up(int fd) {
    struct pollfd p = { fd, POLLIN, 0 };
    int r;
    do { r = poll(&p, 1, 0); } while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    return (p.revents & POLLHUP) ? 1 : 0;
}

int cl_set_pipe_size(int fd, int bytes) { RET(fcntl(fd, F_SETPIPE_SZ, bytes)); }

int cl_set_nonblocking(int fd, int on) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -errno;
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    RET(fcntl(fd, F_SETFL, flags));
}

int cl_pipe(int fds[2]) { RET(pipe2(fds, O_CLOEXEC)); }

void cl_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

// --- spawn -----------------------------------------------------------------------------------

struct spawn_report {
    int err;
    int stage;
};

static const char *const stages[] = { "exec", "chdir", "dup2", "setsid", "setpgid", "prctl", "open /dev/null", "signals" };

// Runs in the forked child: async-signal-safe calls only, no allocation, no locks.
static void child(const char *path, char *const argv[], char *const envp[], const char *cwd,
                  const int *child_fds, int n, int flags, int report_fd, pid_t parent) {
    struct spawn_report rep = { 0, 0 };
    sigset_t all;
    sigemptyset(&all);
    if (sigprocmask(SIG_SETMASK, &all, NULL) < 0) { rep.stage = 7; goto fail; }
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(s, &sa, NULL);  // EINVAL for the RT signals glibc reserves: ignore
    }
    if ((flags & CL_SPAWN_PDEATHSIG)) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) { rep.stage = 5; goto fail; }
        if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
    }
    if ((flags & CL_SPAWN_SETSID) && setsid() < 0) { rep.stage = 3; goto fail; }
    if ((flags & CL_SPAWN_SETPGID) && setpgid(0, 0) < 0) { rep.stage = 4; goto fail; }
    // Move the report pipe and every source fd above the target range first, so that mapping
    // fd a -> b never clobbers a source that is still needed.
    int hi = n > 3 ? n : 3;
    int moved_report = fcntl(report_fd, F_DUPFD_CLOEXEC, hi + n);
    if (moved_report < 0) { rep.stage = 2; goto fail; }
    report_fd = moved_report;
    int src[64];
    if (n > 64) { errno = EINVAL; rep.stage = 2; goto fail; }
    for (int i = 0; i < n; i++) {
        if (child_fds[i] < 0) {
            src[i] = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (src[i] < 0) { rep.stage = 6; goto fail; }
            int up = fcntl(src[i], F_DUPFD_CLOEXEC, hi + n);
            close(src[i]);
            src[i] = up;
        } else {
            src[i] = fcntl(child_fds[i], F_DUPFD_CLOEXEC, hi + n);
        }
        if (src[i] < 0) { rep.stage = 2; goto fail; }
    }
    for (int i = 0; i < n; i++) {
        if (dup2(src[i], i) < 0) { rep.stage = 2; goto fail; }  // dup2 clears CLOEXEC on i
    }
    // Everything above the mapped range closes at exec (the report pipe too, which is how the
    // parent learns that exec succeeded). close_range(CLOEXEC) is one syscall; older kernels
    // get the loop.
    if (syscall(SYS_close_range, (unsigned)n, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */) < 0) {
        for (int fd = n; fd < 65536; fd++) {
            if (fd != report_fd) close(fd);
        }
    }
    if (cwd && chdir(cwd) < 0) { rep.stage = 1; goto fail; }
    execve(path, argv, envp);
    rep.stage = 0;
fail:
    rep.err = errno;
    (void)!write(report_fd, &rep, sizeof rep);
    _exit(127);
}

int cl_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
             const int *child_fds, int n_child_fds, int flags, pid_t *pid_out,
             const char **failed_stage) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        return -e;
    }
    if (pid == 0) {
        close(report[0]);
        child(path, argv, envp, cwd, child_fds, n_child_fds, flags, report[1], parent);
    }
    close(report[1]);
    struct spawn_report rep;
    ssize_t got;
    do { got = read(report[0], &rep, sizeof rep); } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof rep) {
        // The child failed before or at exec: reap it now, report which step failed.
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        if (failed_stage) *failed_stage = stages[rep.stage];
        return -rep.err;
    }
    *pid_out = pid;
    return 0;
}

int cl_pidfd_open(pid_t pid) { RET((int)syscall(SYS_pidfd_open, pid, 0)); }

int cl_reap(pid_t pid, int *status) {
    pid_t r;
    do { r = waitpid(pid, status, WNOHANG); } while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    return r == pid ? 1 : 0;
}

// --- guest -----------------------------------------------------------------------------------

int cl_mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data) {
    RET(mount(source, target, fstype, flags, data));
}

int cl_umount(const char *target, int lazy) { RET(umount2(target, lazy ? MNT_DETACH : 0)); }

int cl_load_module(const char *path, const char *params) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    long r = syscall(SYS_finit_module, fd, params ? params : "", 0);
    int e = errno;
    close(fd);
    if (r < 0 && e != EEXIST) return -e;
    return 0;
}

int cl_power_off(int reboot_instead) {
    sync();
    RET(reboot(reboot_instead ? RB_AUTOBOOT : RB_POWER_OFF));
}

int cl_sethostname(const char *name) { RET(sethostname(name, strlen(name))); }

int cl_signalfd_block(int also_term) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (also_term) {
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
    }
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return -EINVAL;
    RET(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
}

static volatile int wakeup_fd = -1;
static volatile sig_atomic_t terminate_requested = 0;

static void wakeup_handler(int sig) {
    int saved = errno;
    if (sig == SIGTERM || sig == SIGINT) terminate_requested = 1;
    uint64_t one = 1;
    if (wakeup_fd >= 0) (void)!write(wakeup_fd, &one, sizeof one);
    errno = saved;
}

int cl_signal_wakeup_install(int wake_fd) {
    wakeup_fd = wake_fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = wakeup_handler;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGCHLD, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0) return -errno;
    return 0;
}

int cl_signal_take_terminate(void) {
    int t = terminate_requested;
    terminate_requested = 0;
    return t;
}

int cl_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof info);
    if (n < 0) return errno == EAGAIN ? 0 : -errno;
    return n == (ssize_t)sizeof info ? (int)info.ssi_signo : 0;
}

int cl_reap_any(int *status) {
    pid_t r;
    do { r = waitpid(-1, status, WNOHANG); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}
