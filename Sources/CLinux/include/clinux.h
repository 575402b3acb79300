// CLinux: the few Linux facilities Swift's Glibc module hides or cannot call (epoll, eventfd,
// sockaddr_un handling, SO_PEERCRED, pidfd, variadic syscalls), plus the process spawner that
// keeps every line between fork and exec in C. Functions return -errno on failure unless noted.
#ifndef CLINUX_H
#define CLINUX_H

#include <stdint.h>
#include <sys/types.h>

// epoll ---------------------------------------------------------------------------------------
enum {
    CL_EPOLLIN = 0x001,
    CL_EPOLLOUT = 0x004,
    CL_EPOLLERR = 0x008,
    CL_EPOLLHUP = 0x010,
    CL_EPOLLRDHUP = 0x2000,
};
enum { CL_EPOLL_CTL_ADD = 1, CL_EPOLL_CTL_DEL = 2, CL_EPOLL_CTL_MOD = 3 };

/// One ready event: the epoll bits and the caller's 64-bit token.
typedef struct cl_event {
    uint32_t events;
    uint64_t token;
} cl_event;

int cl_epoll_create(void);
int cl_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
/// Waits up to timeout_ms (-1 = forever); fills at most max events. EINTR is returned as -EINTR.
int cl_epoll_wait(int epfd, cl_event *events, int max, int timeout_ms);

int cl_eventfd(void);
int cl_eventfd_signal(int fd);
int cl_eventfd_drain(int fd);

// sockets -------------------------------------------------------------------------------------
/// Non-blocking, close-on-exec AF_UNIX stream socket bound to path and listening. A path that
/// starts with '@' is an abstract socket. An existing filesystem socket file is not removed.
int cl_unix_listen(const char *path, int backlog);
/// Non-blocking, close-on-exec connect; -EAGAIN when the listener's backlog is full.
int cl_unix_connect(const char *path);
/// Non-blocking, close-on-exec AF_VSOCK stream connect to cid:port (-EAGAIN/-EINPROGRESS
/// while connecting).
int cl_vsock_connect(unsigned int cid, unsigned int port);
/// AF_VSOCK stream socket listening on port for any CID.
int cl_vsock_listen(unsigned int port, int backlog);
/// A connected non-blocking, close-on-exec AF_UNIX stream pair.
int cl_socketpair(int fds[2]);
/// accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC.
int cl_accept(int listen_fd);
/// SO_PEERCRED of a connected unix socket.
int cl_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);
int cl_set_nonblocking(int fd, int on);
/// Keeps large allocations (container output and frames of up to a few MiB) on the malloc
/// heap instead of a fresh mmap each time, and freed memory mapped: under TCG every page fault
/// of a new mapping is emulated, which made streaming cost more kernel time than copying.
void cl_malloc_keep_large_blocks(void);
/// splice(2) from pipe `in` to `out`, non-blocking on both: bytes moved, 0 at the pipe's EOF,
/// -EAGAIN when either side would block.
long cl_splice(int in, int out, unsigned long len);
/// FIONREAD: bytes waiting to be read.
int cl_readable_bytes(int fd);
/// 1 when poll(2) reports POLLHUP (a pipe with no writer left), 0 if not.
int cl_hung_up(int fd);
/// F_SETPIPE_SZ: returns the capacity the kernel granted (it rounds up to pages).
int cl_set_pipe_size(int fd, int bytes);
/// pipe2 with O_CLOEXEC.
int cl_pipe(int fds[2]);
/// SIGPIPE is ignored process-wide so a peer that went away yields EPIPE, not death.
void cl_ignore_sigpipe(void);

// processes -----------------------------------------------------------------------------------
enum {
    CL_SPAWN_SETSID = 1 << 0,     ///< new session (detach from the caller's terminal and group)
    CL_SPAWN_PDEATHSIG = 1 << 1,  ///< SIGKILL the child when the spawning thread exits
    CL_SPAWN_SETPGID = 1 << 2,    ///< own process group
};

/// fork + exec with everything in between done here, in C: the signal mask is cleared and every
/// signal reset to its default, fds are mapped (child_fds[i] becomes fd i; -1 opens /dev/null),
/// every other fd is closed, then execve. On success stores the pid and returns 0; when exec (or
/// a step before it) fails in the child, returns -errno of that step and the child is reaped.
/// *failed_stage names that step ("exec", "chdir", "dup2", ...) when non-NULL.
int cl_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
             const int *child_fds, int n_child_fds, int flags, pid_t *pid_out,
             const char **failed_stage);

int cl_pidfd_open(pid_t pid);
/// Non-blocking waitpid for pid: 1 and *status when it was reaped, 0 if still running.
int cl_reap(pid_t pid, int *status);

// guest (PID 1) ----------------------------------------------------------------------------
/// mount(2); data may be NULL.
int cl_mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data);
/// umount2(2) with MNT_DETACH when lazy is non-zero.
int cl_umount(const char *target, int lazy);
/// finit_module(2) of the module file at path with the given parameter string.
int cl_load_module(const char *path, const char *params);
/// Powers the machine off (or reboots): sync, then reboot(2). Returns only on failure.
int cl_power_off(int reboot_instead);
int cl_sethostname(const char *name);
/// Blocks SIGCHLD (plus SIGTERM/SIGINT when also_term) in the calling thread, which threads
/// created afterwards inherit, and returns a non-blocking signalfd for them.
int cl_signalfd_block(int also_term);
/// Installs SIGCHLD/SIGTERM/SIGINT handlers that write to eventfd `wake_fd`: a thread that did
/// not block them (Swift's runtime leaves the main thread's mask empty) then wakes the reaper
/// instead of discarding the signal.
int cl_signal_wakeup_install(int wake_fd);
/// Returns and clears whether SIGTERM or SIGINT arrived through the handler.
int cl_signal_take_terminate(void);
/// Reads one signal from a signalfd: the signal number, 0 if none pending.
int cl_signalfd_read(int fd);
/// waitpid(-1, WNOHANG): the pid reaped and its status, 0 when none is ready, -ECHILD when none.
int cl_reap_any(int *status);

enum { CL_CLONE_NEWNS = 0x00020000, CL_CLONE_NEWUTS = 0x04000000, CL_CLONE_NEWIPC = 0x08000000,
       CL_CLONE_NEWPID = 0x20000000, CL_CLONE_NEWNET = 0x40000000, CL_CLONE_NEWCGROUP = 0x02000000 };

enum {
    CL_MS_RDONLY = 1, CL_MS_NOSUID = 2, CL_MS_NODEV = 4, CL_MS_NOEXEC = 8, CL_MS_REMOUNT = 32,
    CL_MS_BIND = 4096, CL_MS_REC = 16384, CL_MS_PRIVATE = 1 << 18, CL_MS_RELATIME = 1 << 21,
};

#endif
