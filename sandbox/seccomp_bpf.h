/* sandbox/seccomp_bpf.h - the compiled policy (generated at build time). Arrays of
 * struct sock_filter, little-endian, for SECCOMP_SET_MODE_FILTER. */
#ifndef CQ_SANDBOX_SECCOMP_BPF_H
#define CQ_SANDBOX_SECCOMP_BPF_H

/* Attached by init once the sandbox is ready. */
extern const unsigned char cq_seccomp_sandbox_bpf[];
extern const unsigned long cq_seccomp_sandbox_bpf_len;
/* Attached by each sandboxed process before execve. */
extern const unsigned char cq_seccomp_process_bpf[];
extern const unsigned long cq_seccomp_process_bpf_len;

#endif
