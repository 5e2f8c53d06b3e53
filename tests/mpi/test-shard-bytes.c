/* Each rank reads only its shard of the checkpoint, measured by the loader
 * (bytes of tensor data actually pread), under real MPI:
 *   tensor = world (2): every rank reads at most 55% of the checkpoint;
 *   expert = world (4): every rank reads at most a quarter of the routed
 *   expert bytes plus everything that is not a routed expert.
 * usage: mpirun -np N test-shard-bytes tensor|expert FIXTURE_DIR */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "runtime/comm.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"

int main(int argc, char **argv) {
    mr_comm *w;
    if (argc != 3 || mr_comm_mpi_init(&argc, &argv, &w) != MR_OK) {
        fprintf(stderr, "usage: mpirun -np N %s tensor|expert FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    int by_expert = !strcmp(argv[1], "expert");
    const char *dir = argv[2];
    mr_checkpoint *ck;
    if (mr_checkpoint_open(&ck, dir) != MR_OK) { fprintf(stderr, "%s\n", mr_last_error()); return 1; }
    uint64_t total = mr_checkpoint_bytes_total(ck), routed = 0;
    for (int i = 0; i < mr_checkpoint_count(ck); i++) {
        const mr_tensor_info *t = mr_checkpoint_tensor(ck, i);
        if (strstr(t->name, ".experts.")) routed += t->nbytes;
    }
    mr_checkpoint_close(ck);
    mr_backend be;
    mr_backend_cpu_init(&be, 1);
    mr_model_options mo = {.max_slots = 1, .max_ctx = 16, .max_step_tokens = 8};
    if (by_expert) mo.shard = (mr_model_shard){.tp = 1, .ep = w->size, .ep_rank = w->rank, .ep_comm = w};
    else mo.shard = (mr_model_shard){.tp = w->size, .tp_rank = w->rank, .ep = 1, .tp_comm = w};
    mr_model *m;
    mr_status st = mr_model_load(&m, dir, &mo, &be);
    CHECK(st == MR_OK, "rank %d: %s", w->rank, mr_last_error());
    if (st == MR_OK) {
        uint64_t got = mr_model_bytes_read(m);
        if (by_expert) {
            uint64_t limit = total - routed + routed / (uint64_t)w->size;
            printf("rank %d/%d expert: read %llu of %llu bytes (%llu routed); limit %llu\n", w->rank, w->size,
                   (unsigned long long)got, (unsigned long long)total, (unsigned long long)routed,
                   (unsigned long long)limit);
            CHECK(routed > 0 && got <= limit, "rank %d read %llu bytes > %llu", w->rank, (unsigned long long)got,
                  (unsigned long long)limit);
        } else {
            printf("rank %d/%d tensor: read %llu of %llu bytes (%.1f%%)\n", w->rank, w->size,
                   (unsigned long long)got, (unsigned long long)total, 100.0 * (double)got / (double)total);
            CHECK((double)got <= 0.55 * (double)total, "rank %d read %.1f%% of the checkpoint", w->rank,
                  100.0 * (double)got / (double)total);
        }
        mr_model_free(m);
    }
    mr_backend_cpu_free(&be);
    int fails = mr_test_fail;
    w->ops->allreduce_max_i32(w, &fails, 1);
    mr_comm_destroy(w);
    mr_comm_mpi_finalize();
    return fails ? (mr_test_summary(), 1) : mr_test_summary();
}
