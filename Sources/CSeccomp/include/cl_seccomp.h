// CSeccomp: compiles an OCI seccomp profile into a BPF program with libseccomp, in the agent
// (never in a fork child: libseccomp allocates). The child only installs the instructions.
#ifndef CL_SECCOMP_H
#define CL_SECCOMP_H

#include <stdint.h>

/// Actions (OCI SCMP_ACT_*).
enum { CL_SCMP_KILL_THREAD = 0, CL_SCMP_KILL_PROCESS, CL_SCMP_TRAP, CL_SCMP_ERRNO, CL_SCMP_TRACE, CL_SCMP_ALLOW,
       CL_SCMP_LOG };
/// Comparisons: the values of libseccomp's enum scmp_compare (SCMP_CMP_NE = 1 … MASKED_EQ = 7).
enum { CL_SCMP_CMP_NE = 1, CL_SCMP_CMP_LT, CL_SCMP_CMP_LE, CL_SCMP_CMP_EQ, CL_SCMP_CMP_GE, CL_SCMP_CMP_GT,
       CL_SCMP_CMP_MASKED_EQ };

typedef struct cl_seccomp_arg {
    unsigned index;
    int op;
    uint64_t value, value_two;
} cl_seccomp_arg;

typedef struct cl_seccomp_rule {
    const char *name;            ///< syscall name; unknown names are skipped (as runc does)
    int action;
    uint32_t errno_ret;          ///< for CL_SCMP_ERRNO / CL_SCMP_TRACE
    const cl_seccomp_arg *args;  ///< all must match; an index named twice makes one rule per arg
    int n_args;
} cl_seccomp_rule;

typedef struct cl_seccomp_profile {
    int default_action;
    uint32_t default_errno;
    const char *const *arches;   ///< libseccomp names ("x86_64", "x86", "x32"); native always
    int n_arches;
    const cl_seccomp_rule *rules;
    int n_rules;
} cl_seccomp_profile;

/// Compiles the profile. Returns 0 with *filter (malloc'd struct sock_filter[], free with
/// cl_seccomp_free) and *n_instructions; or -errno with *what naming the step or syscall.
int cl_seccomp_compile(const cl_seccomp_profile *p, void **filter, int *n_instructions, const char **what);
void cl_seccomp_free(void *filter);

#endif
