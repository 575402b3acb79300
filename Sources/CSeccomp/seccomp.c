#include "cl_seccomp.h"

#include <errno.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint32_t action(int a, uint32_t err) {
    switch (a) {
    case CL_SCMP_KILL_THREAD: return SCMP_ACT_KILL_THREAD;
    case CL_SCMP_KILL_PROCESS: return SCMP_ACT_KILL_PROCESS;
    case CL_SCMP_TRAP: return SCMP_ACT_TRAP;
    case CL_SCMP_ERRNO: return SCMP_ACT_ERRNO(err);
    case CL_SCMP_TRACE: return SCMP_ACT_TRACE(err);
    case CL_SCMP_LOG: return SCMP_ACT_LOG;
    default: return SCMP_ACT_ALLOW;
    }
}

static struct scmp_arg_cmp cmp(const cl_seccomp_arg *a) {
    struct scmp_arg_cmp c = { a->index, (enum scmp_compare)a->op, a->value, a->value_two };
    return c;
}

static int add_rules(scmp_filter_ctx ctx, const cl_seccomp_profile *p, const char **what) {
    uint32_t def = action(p->default_action, p->default_errno);
    for (int i = 0; i < p->n_rules; i++) {
        const cl_seccomp_rule *r = &p->rules[i];
        int nr = seccomp_syscall_resolve_name(r->name);
        if (nr == __NR_SCMP_ERROR) continue;
        uint32_t act = action(r->action, r->errno_ret);
        if (act == def) continue;  // libseccomp refuses a rule equal to the default
        int repeated = 0;
        for (int a = 0; a < r->n_args && !repeated; a++)
            for (int b = a + 1; b < r->n_args; b++)
                if (r->args[a].index == r->args[b].index) { repeated = 1; break; }
        int rc;
        if (r->n_args > 6) { *what = r->name; return -EINVAL; }
        if (!repeated) {
            struct scmp_arg_cmp c[6];
            for (int a = 0; a < r->n_args; a++) c[a] = cmp(&r->args[a]);
            rc = seccomp_rule_add_array(ctx, act, nr, (unsigned)r->n_args, c);
        } else {
            rc = 0;
            for (int a = 0; a < r->n_args && rc == 0; a++) {
                struct scmp_arg_cmp c = cmp(&r->args[a]);
                rc = seccomp_rule_add_array(ctx, act, nr, 1, &c);
            }
        }
        if (rc < 0) { *what = r->name; return rc; }
    }
    return 0;
}

int cl_seccomp_compile(const cl_seccomp_profile *p, void **filter, int *n_instructions, const char **what) {
    scmp_filter_ctx ctx = seccomp_init(action(p->default_action, p->default_errno));
    if (!ctx) { *what = "seccomp_init"; return -EINVAL; }
    int rc = 0, fd = -1;
    void *out = NULL;
    // The child installs the program itself, after its own no_new_privs decision.
    if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0) { *what = "no_new_privs attribute"; goto done; }
    for (int i = 0; i < p->n_arches; i++) {
        uint32_t arch = seccomp_arch_resolve_name(p->arches[i]);
        if (!arch) { *what = p->arches[i]; rc = -EINVAL; goto done; }
        rc = seccomp_arch_add(ctx, arch);
        if (rc < 0 && rc != -EEXIST) { *what = p->arches[i]; goto done; }
        rc = 0;
    }
    if ((rc = add_rules(ctx, p, what)) < 0) goto done;
    fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
    if (fd < 0) { rc = -errno; *what = "memfd_create"; goto done; }
    if ((rc = seccomp_export_bpf(ctx, fd)) < 0) { *what = "export"; goto done; }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size % 8 != 0) { rc = -EIO; *what = "export size"; goto done; }
    out = malloc((size_t)size);
    if (!out) { rc = -ENOMEM; *what = "malloc"; goto done; }
    if (pread(fd, out, (size_t)size, 0) != size) { rc = -EIO; *what = "read back"; free(out); out = NULL; goto done; }
    *filter = out;
    *n_instructions = (int)(size / 8);
done:
    if (fd >= 0) close(fd);
    seccomp_release(ctx);
    return rc;
}

void cl_seccomp_free(void *filter) { free(filter); }
