#ifndef MOE_SAFETY_H
#define MOE_SAFETY_H
#include <stddef.h>

/// What the process's fatal-signal handlers need to know, kept in fixed tables they can read
/// without locks or allocation: the input files mapped into memory (to name the file behind a
/// bus error) and the temporary files being written (to delete them before the process dies).

/// Records a mapping of `path`; returns a slot for moe_forget_mapping, or -1 if the table is full.
int moe_note_mapping(const void *base, size_t length, const char *path);
void moe_forget_mapping(int slot);

/// Records a temporary file to delete if the process is killed by SIGINT, SIGTERM, SIGHUP or a
/// bus error; returns a slot for moe_forget_temporary, or -1 if the table is full.
int moe_note_temporary(const char *path);
void moe_forget_temporary(int slot);

/// Installs the handlers: SIGBUS (a mapped file shrank, or the disk failed to read a page)
/// reports the file, deletes temporaries and exits 1; SIGINT, SIGTERM and SIGHUP delete
/// temporaries and then die of the signal as usual; SIGXFSZ is ignored so that hitting a
/// file-size limit is an ordinary write error (EFBIG) instead of a silent death.
void moe_install_signal_handlers(void);

/// Asks the kernel to start writing `length` bytes of `fd` from `offset` to disk now, without waiting
/// (Linux sync_file_range; elsewhere nothing). The fsync before the rename then has little left to do.
void moe_start_writeback(int fd, long long offset, long long length);

#endif
