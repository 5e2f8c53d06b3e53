/* Shared by the files of topology/ only. */
#ifndef MR_TOPOLOGY_INTERNAL_H
#define MR_TOPOLOGY_INTERNAL_H

#include <hwloc.h>
#include <string.h>

#include "topology/topology.h"

/* A CPU set as a list string (MR_TOPO_SET bytes), and back (NULL on a
 * malformed string; the caller frees with hwloc_bitmap_free). */
void mr_topo_set_string(hwloc_const_bitmap_t set, char *out);
hwloc_bitmap_t mr_topo_set_parse(const char *list);

/* Copy a string into a fixed field, cut to fit. */
static inline void mr_topo_copy(char *dst, size_t n, const char *src) {
    size_t len = 0;
    while (len + 1 < n && src[len]) len++;
    memmove(dst, src, len);
    dst[len] = 0;
}

#endif
