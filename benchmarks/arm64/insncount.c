/*
 * libinsncount.so - count guest instructions executed under qemu-<arch>
 * (user mode or system mode), QEMU plugin API v1 (QEMU 4.2 to 8.x).
 *
 * Method: at translation time each translation block (TB) gets an exec
 * callback whose userdata is the TB's instruction count; at run time the
 * callback adds that count to a per-vCPU counter with an atomic
 * (relaxed) fetch-add.  In qemu-user every guest thread is its own vCPU
 * running on its own host thread, so per-vCPU slots (one cache line each)
 * avoid contention; the add is still atomic so the result is exact even
 * if two live threads ever shared a slot (index >= NSLOTS wraps).
 * The slots are summed in the atexit callback.
 *
 * Option (after the .so path): outfile=PATH writes "insns: N" to PATH instead of stderr.
 * Used by benchmarks/arm64-insns.mjs; the plugin API declarations it needs are in
 * qemu_plugin_min.h (QEMU ships no header in Debian's qemu-user).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qemu_plugin_min.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define NSLOTS 512
struct slot { uint64_t n; char pad[64 - sizeof(uint64_t)]; };
static struct slot counters[NSLOTS] __attribute__((aligned(64)));
static const char *outfile;

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    __atomic_fetch_add(&counters[vcpu_index % NSLOTS].n,
                       (uint64_t)(uintptr_t)udata, __ATOMIC_RELAXED);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)n);
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    uint64_t total = 0;
    char line[64];
    (void)id; (void)p;
    for (int i = 0; i < NSLOTS; i++)
        total += __atomic_load_n(&counters[i].n, __ATOMIC_RELAXED);
    snprintf(line, sizeof line, "insns: %" PRIu64 "\n", total);
    if (outfile) {
        FILE *f = fopen(outfile, "w");
        if (f) {
            fputs(line, f);
            fclose(f);
            return;
        }
        fprintf(stderr, "libinsncount: cannot open %s\n", outfile);
    }
    fputs(line, stderr);
    fflush(stderr);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "outfile=", 8) == 0) {
            outfile = argv[i] + 8;          /* argv outlives the plugin */
        } else {
            fprintf(stderr, "libinsncount: unknown option '%s'\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
