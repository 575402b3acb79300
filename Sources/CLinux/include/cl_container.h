// Containers in the guest: the single-threaded work (clone into namespaces, setns, mounts,
// root, identity, capabilities, seccomp, exec) done in C in a child that runs no Swift.
// Functions return -errno on failure unless noted.
#ifndef CL_CONTAINER_H
#define CL_CONTAINER_H

#include <stdint.h>
#include <sys/types.h>

/// One mount made inside the container's mount namespace before it starts; `target` is the
/// absolute path in the container.
typedef struct cl_mount_spec {
    const char *source;
    const char *target;
    const char *fstype;
    unsigned long flags;
    const char *data;
} cl_mount_spec;

/// One setrlimit(2).
typedef struct cl_rlimit {
    int resource;
    uint64_t soft, hard;
} cl_rlimit;

/// What every container process needs right before exec, whether it is the container's first
/// process or an exec joining it. Inherited settings (cgroup, rlimits, oom score, umask) are
/// applied first, so every later stage already runs under them.
typedef struct cl_process_config {
    char *const *argv;
    char *const *envp;                  ///< "K=V"; PATH is used to find argv[0]
    const char *cwd;
    uint32_t uid, gid;
    const uint32_t *groups;
    int n_groups;
    int stdio[3];                       ///< fds for 0, 1, 2 (-1: /dev/null)
    int terminal;                       ///< stdio[0] is a pty slave: new session, controlling tty
    int cgroup_procs_fd;                ///< the container cgroup's cgroup.procs, or -1
    const cl_rlimit *rlimits;
    int n_rlimits;
    int oom_score_adj_set;
    int oom_score_adj;
    int umask;                          ///< -1: leave as is
    int caps_set;                       ///< 0: keep the caller's capabilities
    uint64_t cap_bounding, cap_effective, cap_permitted, cap_inheritable, cap_ambient;
    int no_new_privs;
    const void *seccomp_filter;         ///< struct sock_filter[], NULL for none
    int seccomp_len;                    ///< number of instructions
} cl_process_config;

/// The container's first process: namespaces to create, filesystem to prepare, then `process`.
typedef struct cl_container_config {
    const char *rootfs;                 ///< absolute guest path of the root filesystem
    int readonly_root;
    int clone_flags;                    ///< CLONE_NEW* namespaces to create
    const char *hostname;               ///< NULL: leave as is
    const cl_mount_spec *mounts;
    int n_mounts;
    const char *const *devices;         ///< guest device nodes bind-mounted at the same path
    int n_devices;
    const char *const *masked;          ///< paths hidden (files: /dev/null bind; dirs: tmpfs ro)
    int n_masked;
    const char *const *readonly;        ///< paths made read-only
    int n_readonly;
    cl_process_config process;
} cl_container_config;

/// Stage-report records on a status fd: {stage, value}. `CL_STAGE_READY` (value 0): the first
/// process is prepared and waits for start. `CL_STAGE_PID` (value = pid): an exec's process
/// exists. Any other stage: that stage failed with errno = value and the process exits 127.
/// EOF after READY or PID: exec succeeded.
enum { CL_STAGE_READY = 0, CL_STAGE_PID = 1 };

/// Clones the container's first process into new namespaces and returns at once with *pid,
/// *start_fd (write end: one byte starts it, closing without writing ends it) and *status_fd
/// (non-blocking read end). The child prepares itself (cgroup, limits, mounts, root, hostname,
/// stdio, identity, capabilities, seccomp), reports READY, and waits for start. Only the clone
/// itself can fail here; later failures arrive as records. The caller reaps the child.
int cl_container_create(const cl_container_config *c, pid_t *pid, int *start_fd, int *status_fd);

/// Starts a process inside the running container whose first process is `target_pid`: a
/// helper child joins the namespaces in `ns_flags` (CLONE_NEW* of ipc, uts, pid, mnt) and the
/// container's root, clones the process as a sibling (a direct child of the caller), reports
/// its pid and exits. Returns 0 with *helper_pid (for the caller's reaper) and *status_fd
/// (non-blocking): the PID record, then EOF or a failure record.
int cl_container_exec(pid_t target_pid, int ns_flags, const cl_process_config *p, pid_t *helper_pid, int *status_fd);

/// Reads one record from a status fd: 1 with *stage, *value and *stage_name; 0 at EOF;
/// -EAGAIN when nothing is available yet.
int cl_stage_read(int status_fd, int *stage, int *value, const char **stage_name);

/// A new pty pair (master non-blocking, both close-on-exec).
int cl_openpty(int *master, int *slave, unsigned short rows, unsigned short cols);
/// TIOCSWINSZ on a pty master.
int cl_set_winsize(int fd, unsigned short rows, unsigned short cols);

/// Non-blocking, close-on-exec inotify instance.
int cl_inotify_init(void);
/// IN_MODIFY watch on path; returns the watch descriptor.
int cl_inotify_watch_modify(int fd, const char *path);
int cl_inotify_unwatch(int fd, int wd);
/// Reads pending events; fills up to max watch descriptors that fired. Returns the count, 0
/// when none are pending.
int cl_inotify_read(int fd, int *wds, int max);

#endif
