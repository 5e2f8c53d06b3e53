/* mpi-nodes: does this MPI job really span the nodes it was given?
 *
 *   mpirun ... mpi-nodes PER_NODE [HOST1,HOST2,...] [--bytes B] [--time-allreduce B --iters N]
 *
 * Checks, on every rank:
 *  - MPI_Get_processor_name agrees with gethostname;
 *  - MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) groups exactly the ranks
 *    with the same host name, PER_NODE of them, consecutive in rank order
 *    (Open MPI's default by-slot mapping), and HOSTi is the host of the
 *    i-th group when a host list is given;
 *  - a B-byte (default 4 MiB per rank) MPI_Alltoall, every element of which
 *    names its sender, receiver and position (DeepEP-style: a wrong slice
 *    proves where it came from);
 *  - a B-byte MPI_Allreduce (sum of int32) with the exact result known.
 * Optionally times a --time-allreduce B float all-reduce (median of --iters).
 * Rank 0 prints one summary line; every rank exits 1 on any mismatch.
 */
#define _POSIX_C_SOURCE 200809L /* gethostname */
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MR_HOST_MAX 256

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The value rank `src` sends to rank `dst` at position i of its block. */
static int32_t a2a_value(int src, int dst, size_t i) {
  return (int32_t)(((uint32_t)src << 24) ^ ((uint32_t)dst << 16) ^ (uint32_t)(i * 2654435761u));
}

/* The i-th element of the host list "a,b,c", or NULL. */
static const char *nth_host(const char *list, int n, char *out, size_t cap) {
  const char *p = list;
  for (int k = 0; k < n && p; k++) {
    p = strchr(p, ',');
    if (p) p++;
  }
  if (!p || !*p) return NULL;
  size_t len = strcspn(p, ",");
  if (len >= cap) len = cap - 1;
  memcpy(out, p, len);
  out[len] = '\0';
  return out;
}

/* One line per failure, written whole so that ranks do not interleave. */
static int fail_rank = -1, errors = 0;
static void fail(const char *fmt, ...) {
  char line[1024];
  int n = snprintf(line, sizeof line, "mpi-nodes: rank %d: ", fail_rank);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  strcat(line, "\n");
  fputs(line, stderr);
  errors++;
}

static void usage(void) {
  fprintf(stderr, "usage: mpi-nodes PER_NODE [HOST1,HOST2,...] [--bytes B] [--time-allreduce B --iters N]\n");
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  int per_node = 0, iters = 20;
  const char *hosts = NULL;
  size_t bytes = 4u << 20, time_bytes = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--bytes") && i + 1 < argc) bytes = strtoull(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--time-allreduce") && i + 1 < argc) time_bytes = strtoull(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!per_node && atoi(argv[i]) > 0) per_node = atoi(argv[i]);
    else if (!hosts && argv[i][0] != '-') hosts = argv[i];
    else { if (rank == 0) usage(); MPI_Finalize(); return 2; }
  }
  if (per_node <= 0 || size % per_node || iters <= 0 || bytes < (size_t)size * 4) {
    if (rank == 0) {
      usage();
      fprintf(stderr, "mpi-nodes: need PER_NODE > 0 dividing %d ranks and --bytes >= 4 * ranks\n", size);
    }
    MPI_Finalize();
    return 2;
  }
  fail_rank = rank;

  /* Host names. */
  char proc[MPI_MAX_PROCESSOR_NAME] = {0}, host[MR_HOST_MAX] = {0};
  int proc_len = 0;
  MPI_Get_processor_name(proc, &proc_len);
  if (gethostname(host, sizeof host - 1)) fail("gethostname failed");
  if (strcmp(proc, host)) fail("MPI_Get_processor_name '%s' != gethostname '%s'", proc, host);
  char *all_hosts = malloc((size_t)size * MR_HOST_MAX);
  MPI_Allgather(host, MR_HOST_MAX, MPI_CHAR, all_hosts, MR_HOST_MAX, MPI_CHAR, MPI_COMM_WORLD);

  /* Node of each rank: by-slot mapping puts rank r on node r / PER_NODE. */
  int node = rank / per_node, nodes = size / per_node;
  for (int r = 0; r < size; r++) {
    int same_host = !strcmp(all_hosts + (size_t)r * MR_HOST_MAX, host);
    if (same_host != (r / per_node == node) && !errors)
      fail("rank %d on host '%s' but I am on '%s' (expected %d ranks per node, by slot)", r,
           all_hosts + (size_t)r * MR_HOST_MAX, host, per_node);
  }
  char want[MR_HOST_MAX];
  if (hosts && !nth_host(hosts, node, want, sizeof want)) fail("host list '%s' has no entry %d", hosts, node);
  else if (hosts && strcmp(want, host)) fail("on host '%s', expected '%s'", host, want);

  /* Shared-memory communicator = my node. */
  MPI_Comm shm;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &shm);
  int shm_size, shm_rank;
  MPI_Comm_size(shm, &shm_size);
  MPI_Comm_rank(shm, &shm_rank);
  if (shm_size != per_node) fail("MPI_COMM_TYPE_SHARED has %d ranks, expected %d", shm_size, per_node);
  if (shm_rank != rank % per_node) fail("rank %d in MPI_COMM_TYPE_SHARED, expected %d", shm_rank, rank % per_node);
  MPI_Comm_free(&shm);

  /* All-to-all: `bytes` per rank, a block of `block` int32 per peer. */
  size_t block = bytes / 4 / (size_t)size;
  int32_t *send = malloc(block * (size_t)size * sizeof *send);
  int32_t *recv = malloc(block * (size_t)size * sizeof *recv);
  for (int dst = 0; dst < size; dst++)
    for (size_t i = 0; i < block; i++) send[(size_t)dst * block + i] = a2a_value(rank, dst, i);
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  MPI_Alltoall(send, (int)block, MPI_INT32_T, recv, (int)block, MPI_INT32_T, MPI_COMM_WORLD);
  double t_a2a = MPI_Wtime() - t0;
  size_t wrong = 0;
  for (int src = 0; src < size; src++)
    for (size_t i = 0; i < block; i++)
      if (recv[(size_t)src * block + i] != a2a_value(src, rank, i) && wrong++ == 0)
        fail("all-to-all: element %zu from rank %d is %d, expected %d", i, src, recv[(size_t)src * block + i],
             a2a_value(src, rank, i));
  if (wrong) fail("all-to-all: %zu wrong elements", wrong);

  /* All-reduce: rank r contributes r + 1 + (i % 7); the sum is exact. */
  size_t count = bytes / 4;
  for (size_t i = 0; i < count; i++) send[i] = rank + 1 + (int32_t)(i % 7);
  MPI_Barrier(MPI_COMM_WORLD);
  t0 = MPI_Wtime();
  MPI_Allreduce(send, recv, (int)count, MPI_INT32_T, MPI_SUM, MPI_COMM_WORLD);
  double t_ar = MPI_Wtime() - t0;
  wrong = 0;
  for (size_t i = 0; i < count; i++) {
    int32_t expect = (int32_t)size * (size + 1) / 2 + (int32_t)size * (int32_t)(i % 7);
    if (recv[i] != expect && wrong++ == 0) fail("all-reduce: element %zu is %d, expected %d", i, recv[i], expect);
  }
  if (wrong) fail("all-reduce: %zu wrong elements", wrong);
  free(send);
  free(recv);

  /* Optional timing: median of `iters` float all-reduces after 3 warm-ups. */
  double t_med = 0;
  if (time_bytes) {
    size_t n = time_bytes / 4;
    float *buf = malloc(n * sizeof *buf);
    double *t = malloc((size_t)iters * sizeof *t);
    for (size_t i = 0; i < n; i++) buf[i] = 1.0f;
    for (int it = -3; it < iters; it++) {
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      double dt = MPI_Wtime() - t0;
      MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (it >= 0) t[it] = dt;
      for (size_t i = 0; i < n; i++) buf[i] = 1.0f;
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_double);
    t_med = t[iters / 2];
    free(buf);
    free(t);
  }

  int total = 0;
  MPI_Allreduce(&errors, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &t_a2a, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &t_ar, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) {
    printf("mpi-nodes: %s: %d ranks on %d nodes (", total ? "FAIL" : "ok", size, nodes);
    for (int k = 0; k < nodes; k++) printf("%s%s", k ? "," : "", all_hosts + (size_t)k * per_node * MR_HOST_MAX);
    printf("), %d per node; alltoall %zu B/rank %.2f ms; allreduce %zu B %.2f ms", per_node, bytes, t_a2a * 1e3,
           bytes, t_ar * 1e3);
    if (time_bytes)
      printf("; allreduce %zu B median %.3f ms (busbw %.2f GB/s, %d iters)", time_bytes, t_med * 1e3,
             t_med > 0 ? 2.0 * (size - 1) / size * (double)time_bytes / t_med / 1e9 : 0.0, iters);
    printf("; %d errors\n", total);
    fflush(stdout);
  }
  free(all_hosts);
  MPI_Finalize();
  return total ? 1 : 0;
}
