// Container processes in the guest. Everything from clone to exec runs in a child that is a
// copy of the multithreaded agent (or, for execs, shares its memory as a vfork child), so only
// async-signal-safe calls are made there: no malloc, no locks, no Swift, no writes to shared
// data. Failures are reported as {stage, errno} records on a CLOEXEC pipe.
#include "cl_container.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

enum {
    ST_READY = CL_STAGE_READY, ST_PID = CL_STAGE_PID, ST_CGROUP, ST_RLIMIT, ST_OOM_SCORE, ST_MOUNT_PRIVATE,
    ST_BIND_ROOT, ST_MOUNT, ST_DEVICE, ST_MASK, ST_READONLY_PATH, ST_READONLY_ROOT, ST_MOVE_ROOT, ST_CHROOT,
    ST_HOSTNAME, ST_JOIN_NS, ST_JOIN_ROOT, ST_CLONE, ST_STDIO, ST_TTY, ST_SECCOMP, ST_BOUNDING, ST_GROUPS,
    ST_GID, ST_UID, ST_CAPS, ST_AMBIENT, ST_CWD, ST_NO_NEW_PRIVS, ST_WAIT_START, ST_EXEC, ST_COUNT
};

static const char *const stage_names[ST_COUNT] = {
    "ready", "pid", "join cgroup", "setrlimit", "oom_score_adj", "make / private", "bind rootfs", "mount",
    "device", "mask path", "readonly path", "readonly rootfs", "move rootfs to /", "chroot", "sethostname",
    "setns", "enter container root", "clone", "stdio", "controlling terminal", "seccomp",
    "drop bounding capabilities", "setgroups", "setgid", "setuid", "capset", "raise ambient capabilities",
    "chdir to cwd", "no_new_privs", "wait for start", "exec",
};

// Decimal text of v into out (NUL-terminated); returns its length. snprintf is not
// async-signal-safe.
static int format_int(char *out, long v) {
    char tmp[24];
    int t = 0, n = 0;
    unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
    do { tmp[t++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) out[n++] = '-';
    while (t) out[n++] = tmp[--t];
    out[n] = '\0';
    return n;
}

static void report(int fd, int stage, int value) {
    int rec[2] = { stage, value };
    (void)!write(fd, rec, sizeof rec);
}

// path = root + rel, in buf (rel absolute). Returns buf or NULL when too long.
static char *join(char *buf, size_t size, const char *root, const char *rel) {
    size_t a = strlen(root), b = strlen(rel);
    if (a + b + 1 > size) return NULL;
    memcpy(buf, root, a);
    memcpy(buf + a, rel, b + 1);
    return buf;
}

// mkdir -p of path (or of its parent, then an empty file, when as_file).
static int make_path(char *path, int as_file) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) { *p = '/'; return -1; }
        *p = '/';
    }
    if (as_file) {
        int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST && errno != EISDIR) return -1;
        if (fd >= 0) close(fd);
        return 0;
    }
    return (mkdir(path, 0755) < 0 && errno != EEXIST) ? -1 : 0;
}

static int exec_in_path(char *const argv[], char *const envp[]) {
    const char *file = argv[0];
    if (strchr(file, '/')) return execve(file, argv, envp);
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char *const *e = envp; e && *e; e++) {
        if (strncmp(*e, "PATH=", 5) == 0) { path = *e + 5; break; }
    }
    int saved = ENOENT;
    char buf[4096];
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        if (n + strlen(file) + 2 < sizeof buf) {
            memcpy(buf, path, n);
            buf[n] = '/';
            strcpy(buf + n + 1, file);
            execve(buf, argv, envp);
            if (errno != ENOENT && errno != ENOTDIR) saved = errno;
        }
        if (!end) break;
        path = end + 1;
    }
    errno = saved;
    return -1;
}

static void reset_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(s, &sa, NULL);
    }
}

// The settings children inherit: applied first so that every later step (and every process
// the helper clones) already runs in the container's cgroup and under its limits.
static int apply_inherited(const cl_process_config *p, int *stage) {
    *stage = ST_CGROUP;
    if (p->cgroup_procs_fd >= 0 && write(p->cgroup_procs_fd, "0", 1) != 1) return -1;
    *stage = ST_RLIMIT;
    for (int i = 0; i < p->n_rlimits; i++) {
        struct rlimit rl = { p->rlimits[i].soft, p->rlimits[i].hard };
        if (setrlimit(p->rlimits[i].resource, &rl) < 0) return -1;
    }
    if (p->oom_score_adj_set) {
        *stage = ST_OOM_SCORE;
        char buf[24];
        int n = format_int(buf, p->oom_score_adj);
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0) return -1;
        ssize_t w = write(fd, buf, (size_t)n);
        int e = errno;
        close(fd);
        if (w != n) { errno = e; return -1; }
    }
    if (p->umask >= 0) umask((mode_t)p->umask);
    return 0;
}

static int capset_all(const cl_process_config *p) {
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    for (int i = 0; i < 2; i++) {
        d[i].effective = (uint32_t)(p->cap_effective >> (32 * i));
        d[i].permitted = (uint32_t)(p->cap_permitted >> (32 * i));
        d[i].inheritable = (uint32_t)(p->cap_inheritable >> (32 * i));
    }
    return (int)syscall(SYS_capset, &h, d);
}

static int load_seccomp(const cl_process_config *p) {
    struct sock_fprog prog = { (unsigned short)p->seccomp_len, (struct sock_filter *)p->seccomp_filter };
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

// From stdio to the last step before exec, in the order runc uses: seccomp is loaded last
// when no_new_privs allows it, otherwise while the process still has CAP_SYS_ADMIN.
static int finish_process(const cl_process_config *p, int *stage) {
    *stage = ST_STDIO;
    int src[3];
    for (int i = 0; i < 3; i++) {
        int fd = p->stdio[i] >= 0 ? p->stdio[i] : open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0) return -1;
        src[i] = fcntl(fd, F_DUPFD_CLOEXEC, 10);
        if (src[i] < 0) return -1;
    }
    for (int i = 0; i < 3; i++) if (dup2(src[i], i) < 0) return -1;
    // Only 0-2 survive exec (the report and start pipes are CLOEXEC already).
    syscall(SYS_close_range, 3U, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */);
    if (p->terminal) {
        *stage = ST_TTY;
        if (setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0) return -1;
    }
    int early_seccomp = p->seccomp_filter && !p->no_new_privs;
    if (early_seccomp) {
        *stage = ST_SECCOMP;
        if (load_seccomp(p) < 0) return -1;
    }
    if (p->caps_set) {
        *stage = ST_BOUNDING;
        for (int cap = 0; cap < 64; cap++) {
            if (p->cap_bounding & (1ULL << cap)) continue;
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) return -1;
        }
        // Keep the permitted set across the uid change; capset trims it right after.
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) return -1;
    }
    // Raw syscalls, not glibc's wrappers: those broadcast the change to every thread glibc
    // knows of (its thread list, shared memory for a vfork child), which here are the agent's
    // own threads; that can hang the child and with it the agent. Credentials are per task.
    *stage = ST_GROUPS;
    if (syscall(SYS_setgroups, (size_t)p->n_groups, (const gid_t *)p->groups) < 0) return -1;
    *stage = ST_GID;
    if (syscall(SYS_setresgid, p->gid, p->gid, p->gid) < 0) return -1;
    *stage = ST_UID;
    if (syscall(SYS_setresuid, p->uid, p->uid, p->uid) < 0) return -1;
    if (p->caps_set) {
        *stage = ST_CAPS;
        if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 || capset_all(p) < 0) return -1;
        *stage = ST_AMBIENT;
        for (int cap = 0; cap < 64; cap++) {
            if (!(p->cap_ambient & (1ULL << cap))) continue;
            if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0) return -1;
        }
    }
    *stage = ST_CWD;
    if (chdir(p->cwd && *p->cwd ? p->cwd : "/") < 0) return -1;
    if (p->no_new_privs) {
        *stage = ST_NO_NEW_PRIVS;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return -1;
    }
    if (p->seccomp_filter && !early_seccomp) {
        *stage = ST_SECCOMP;
        if (load_seccomp(p) < 0) return -1;
    }
    return 0;
}

static int prepare_root(const cl_container_config *c, int *stage) {
    char buf[4096];
    *stage = ST_MOUNT_PRIVATE;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return -1;
    *stage = ST_BIND_ROOT;
    if (mount(c->rootfs, c->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0) return -1;
    *stage = ST_MOUNT;
    for (int i = 0; i < c->n_mounts; i++) {
        const cl_mount_spec *m = &c->mounts[i];
        if (!join(buf, sizeof buf, c->rootfs, m->target)) { errno = ENAMETOOLONG; return -1; }
        struct stat st;
        int file = (m->flags & MS_BIND) && m->source && stat(m->source, &st) == 0 && !S_ISDIR(st.st_mode);
        if (make_path(buf, file) < 0) return -1;
        if (mount(m->source, buf, m->fstype, m->flags & ~(unsigned long)MS_RDONLY, m->data) < 0) return -1;
        if ((m->flags & MS_BIND) && (m->flags & MS_RDONLY) &&
            mount(NULL, buf, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | (m->flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC)), NULL) < 0)
            return -1;
    }
    *stage = ST_DEVICE;
    for (int i = 0; i < c->n_devices; i++) {
        if (!join(buf, sizeof buf, c->rootfs, c->devices[i])) { errno = ENAMETOOLONG; return -1; }
        if (make_path(buf, 1) < 0) return -1;
        if (mount(c->devices[i], buf, NULL, MS_BIND, NULL) < 0) return -1;
    }
    *stage = ST_MASK;
    for (int i = 0; i < c->n_masked; i++) {
        struct stat st;
        if (!join(buf, sizeof buf, c->rootfs, c->masked[i])) continue;
        if (stat(buf, &st) < 0) continue;  // nothing to hide
        int r = S_ISDIR(st.st_mode) ? mount("tmpfs", buf, "tmpfs", MS_RDONLY, "size=0")
                                    : mount("/dev/null", buf, NULL, MS_BIND, NULL);
        if (r < 0) return -1;
    }
    *stage = ST_READONLY_PATH;
    for (int i = 0; i < c->n_readonly; i++) {
        struct stat st;
        if (!join(buf, sizeof buf, c->rootfs, c->readonly[i])) continue;
        if (stat(buf, &st) < 0) continue;
        if (mount(buf, buf, NULL, MS_BIND | MS_REC, NULL) < 0 ||
            mount(NULL, buf, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0) return -1;
    }
    if (c->readonly_root) {
        *stage = ST_READONLY_ROOT;
        if (mount(NULL, c->rootfs, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0) return -1;
    }
    // The guest root is the initramfs, where pivot_root is refused: move the container root
    // over / in this mount namespace and chroot into it (runc's no-pivot path).
    *stage = ST_MOVE_ROOT;
    if (chdir(c->rootfs) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0) return -1;
    *stage = ST_CHROOT;
    if (chroot(".") < 0 || chdir("/") < 0) return -1;
    if (c->hostname) {
        *stage = ST_HOSTNAME;
        if (sethostname(c->hostname, strlen(c->hostname)) < 0) return -1;
    }
    return 0;
}

struct init_child {
    const cl_container_config *c;
    int report_fd;   // write end, CLOEXEC
    int start_fd;    // read end
    int start_write; // the parent's end: closed here, so that closing it in the parent aborts
};

static int init_main(void *arg) {
    struct init_child *k = arg;
    const cl_container_config *c = k->c;
    int stage = ST_CLONE;
    close(k->start_write);
    reset_signals();
    if (apply_inherited(&c->process, &stage) < 0) goto fail;
    if (prepare_root(c, &stage) < 0) goto fail;
    if (finish_process(&c->process, &stage) < 0) goto fail;
    report(k->report_fd, ST_READY, 0);
    stage = ST_WAIT_START;
    {
        char go;
        ssize_t n;
        do { n = read(k->start_fd, &go, 1); } while (n < 0 && errno == EINTR);
        if (n != 1) _exit(0);  // the container was removed before it started
    }
    exec_in_path(c->process.argv, c->process.envp);
    stage = ST_EXEC;
fail:
    report(k->report_fd, stage, errno);
    _exit(127);
}

// clone(2) without CLONE_VM (the child gets a copy of this address space, as with fork) on a
// stack of its own; the stack mapping is the caller's to drop once clone returned.
static pid_t clone_child(int (*fn)(void *), void *arg, int flags) {
    size_t size = 256 * 1024;
    char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    pid_t pid = clone(fn, stack + size, flags, arg);
    int e = errno;
    munmap(stack, size);
    errno = e;
    return pid;
}

int cl_container_create(const cl_container_config *c, pid_t *pid, int *start_fd, int *status_fd) {
    int report[2], start[2];
    if (pipe2(report, O_CLOEXEC) < 0) return -errno;
    if (pipe2(start, O_CLOEXEC) < 0) { int e = errno; close(report[0]); close(report[1]); return -e; }
    struct init_child k = { c, report[1], start[0], start[1] };
    pid_t child = clone_child(init_main, &k, c->clone_flags | SIGCHLD);
    int e = errno;
    close(report[1]);
    close(start[0]);
    if (child < 0) { close(report[0]); close(start[1]); return -e; }
    fcntl(report[0], F_SETFL, O_NONBLOCK);
    *pid = child;
    *start_fd = start[1];
    *status_fd = report[0];
    return 0;
}

struct exec_child {
    pid_t target;
    int ns_flags;
    const cl_process_config *p;
    int report_fd;
};

static int exec_process_main(void *arg) {
    struct exec_child *k = arg;
    int stage = ST_STDIO;
    if (finish_process(k->p, &stage) == 0) {
        exec_in_path(k->p->argv, k->p->envp);
        stage = ST_EXEC;
    }
    report(k->report_fd, stage, errno);
    _exit(127);
}

// The helper: joins the container, clones the process as the agent's child, reports its pid.
static int exec_helper_main(void *arg) {
    struct exec_child *k = arg;
    int stage = ST_JOIN_NS;
    reset_signals();
    static const struct { int flag; const char *name; } order[] = {
        { CLONE_NEWIPC, "ipc" }, { CLONE_NEWUTS, "uts" }, { CLONE_NEWPID, "pid" }, { CLONE_NEWNS, "mnt" },
    };
    // "/proc/<pid>/" once; "ns/<name>" or "root" appended per file.
    char path[64] = "/proc/";
    char *leaf = path + 6;
    leaf += format_int(leaf, k->target);
    *leaf++ = '/';
    int fds[4], root = -1;
    for (int i = 0; i < 4; i++) {
        fds[i] = -1;
        if (!(k->ns_flags & order[i].flag)) continue;
        memcpy(leaf, "ns/", 3);
        strcpy(leaf + 3, order[i].name);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) goto fail;
        if (order[i].flag == CLONE_NEWNS) {
            strcpy(leaf, "root");
            root = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (root < 0) goto fail;
        }
    }
    // Inherited settings before setns(pid): the helper's cgroup and limits pass to the child.
    if (apply_inherited(k->p, &stage) < 0) goto fail;
    stage = ST_JOIN_NS;
    for (int i = 0; i < 4; i++) {
        if (fds[i] >= 0 && setns(fds[i], order[i].flag) < 0) goto fail;
    }
    if (root >= 0) {
        // setns(mnt) puts us at the namespace's root mount, under the container's moved root.
        stage = ST_JOIN_ROOT;
        if (fchdir(root) < 0 || chroot(".") < 0 || chdir("/") < 0) goto fail;
    }
    stage = ST_CLONE;
    // posix_spawn's way: share the memory, suspend until the child has exec'd. No page tables
    // of the agent get copied (costly under TCG), and the agent keeps no copy-on-write pages.
    pid_t child = clone_child(exec_process_main, k, CLONE_PARENT | CLONE_VM | CLONE_VFORK);
    if (child < 0) goto fail;
    report(k->report_fd, ST_PID, child);
    _exit(0);
fail:
    report(k->report_fd, stage, errno);
    _exit(127);
}

int cl_container_exec(pid_t target_pid, int ns_flags, const cl_process_config *p, pid_t *helper_pid, int *status_fd) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) return -errno;
    struct exec_child k = { target_pid, ns_flags, p, report[1] };
    // The helper shares our memory and we are suspended until it exits, right after its
    // child exec'd: a few syscalls, and the caller refuses execs into a frozen container, which
    // would hold it here. Both are vfork children, so oom_score_adj stays theirs.
    pid_t helper = clone_child(exec_helper_main, &k, CLONE_VM | CLONE_VFORK | SIGCHLD);
    int e = errno;
    close(report[1]);
    if (helper < 0) { close(report[0]); return -e; }
    fcntl(report[0], F_SETFL, O_NONBLOCK);
    *helper_pid = helper;
    *status_fd = report[0];
    return 0;
}

int cl_stage_read(int status_fd, int *stage, int *value, const char **stage_name) {
    int rec[2];
    ssize_t n;
    do { n = read(status_fd, rec, sizeof rec); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n != (ssize_t)sizeof rec) return 0;
    *stage = rec[0];
    *value = rec[1];
    *stage_name = stage_names[rec[0] >= 0 && rec[0] < ST_COUNT ? rec[0] : ST_EXEC];
    return 1;
}

// --- pty ---------------------------------------------------------------------------------------

int cl_openpty(int *master, int *slave, unsigned short rows, unsigned short cols) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (m < 0) return -errno;
    int unlock = 0;
    if (ioctl(m, TIOCSPTLCK, &unlock) < 0) { int e = errno; close(m); return -e; }
    // TIOCGPTPEER opens the slave from the master itself: no /dev/pts path lookup needed.
    int s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) { int e = errno; close(m); return -e; }
    if (rows || cols) {
        struct winsize ws = { rows, cols, 0, 0 };
        ioctl(m, TIOCSWINSZ, &ws);
    }
    *master = m;
    *slave = s;
    return 0;
}

int cl_set_winsize(int fd, unsigned short rows, unsigned short cols) {
    struct winsize ws = { rows, cols, 0, 0 };
    return ioctl(fd, TIOCSWINSZ, &ws) < 0 ? -errno : 0;
}

// --- inotify -------------------------------------------------------------------------------------

int cl_inotify_init(void) {
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int cl_inotify_watch_modify(int fd, const char *path) {
    int wd = inotify_add_watch(fd, path, IN_MODIFY);
    return wd < 0 ? -errno : wd;
}

int cl_inotify_unwatch(int fd, int wd) { return inotify_rm_watch(fd, wd) < 0 ? -errno : 0; }

int cl_inotify_read(int fd, int *wds, int max) {
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int count = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) return (errno == EAGAIN || count > 0) ? count : -errno;
        if (n == 0) return count;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (count < max) wds[count++] = ev->wd;
            p += sizeof *ev + ev->len;
        }
    }
}
