/* The fuzz input as a file: an in-memory memfd holding the bytes, opened by
 * its /proc/self/fd path as a real model file would be.  Returns the fd
 * (close it when done) and writes the path; -1 if no memfd could be made. */
#ifndef MR_FUZZ_FILE_H
#define MR_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static inline int fuzz_file(const char *name, const uint8_t *data, size_t size, char path[64]) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
