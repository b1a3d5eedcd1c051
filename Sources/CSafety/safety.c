#define _GNU_SOURCE
#include "safety.h"
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOTS 1024

typedef struct {
    _Atomic(char *) path;
    _Atomic uintptr_t base;
    _Atomic size_t length;
} mapping_slot;

static mapping_slot mappings[SLOTS];
static _Atomic(char *) temporaries[SLOTS];

static int claim(_Atomic(char *) *slot, char *copy) {
    char *expected = NULL;
    return atomic_compare_exchange_strong(slot, &expected, copy);
}

int moe_note_mapping(const void *base, size_t length, const char *path) {
    char *copy = strdup(path);
    if (!copy) return -1;
    for (int i = 0; i < SLOTS; i++) {
        if (atomic_load(&mappings[i].path) == NULL && claim(&mappings[i].path, copy)) {
            atomic_store(&mappings[i].length, length);
            atomic_store(&mappings[i].base, (uintptr_t)base);
            return i;
        }
    }
    free(copy);
    return -1;
}

/* The path strings are never freed: a handler on another thread may be reading one, and freed memory
   reused for another path could make it unlink the wrong file. A run notes a few hundred at most. */
void moe_forget_mapping(int slot) {
    if (slot < 0 || slot >= SLOTS) return;
    atomic_store(&mappings[slot].base, 0);
    atomic_store(&mappings[slot].length, 0);
    atomic_store(&mappings[slot].path, NULL);
}

int moe_note_temporary(const char *path) {
    char *copy = strdup(path);
    if (!copy) return -1;
    for (int i = 0; i < SLOTS; i++) {
        if (atomic_load(&temporaries[i]) == NULL && claim(&temporaries[i], copy)) return i;
    }
    free(copy);
    return -1;
}

void moe_forget_temporary(int slot) {
    if (slot < 0 || slot >= SLOTS) return;
    atomic_store(&temporaries[slot], NULL);  /* not freed: see moe_forget_mapping */
}

void moe_start_writeback(int fd, long long offset, long long length) {
#ifdef __linux__
    (void)sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd;
    (void)offset;
    (void)length;
#endif
}

/* Everything below runs inside signal handlers: only async-signal-safe calls. */

static void say(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void delete_temporaries(void) {
    for (int i = 0; i < SLOTS; i++) {
        char *p = atomic_load(&temporaries[i]);
        if (p) unlink(p);
    }
}

static atomic_int reporting;

static void on_bus_error(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    /* Several threads may fault on the same file at once: one reports, the others wait for the exit. */
    if (atomic_exchange(&reporting, 1)) {
        for (;;) pause();
    }
    uintptr_t addr = (uintptr_t)info->si_addr;
    const char *file = NULL;
    for (int i = 0; i < SLOTS && !file; i++) {
        char *p = atomic_load(&mappings[i].path);
        uintptr_t base = atomic_load(&mappings[i].base);
        size_t length = atomic_load(&mappings[i].length);
        if (p && base && addr >= base && addr - base < length) file = p;
    }
    say("error: ");
    if (file) {
        say(file);
        say(": ");
    }
    say("cannot read the file: it was truncated or replaced while moetool was reading it, or the disk "
        "returned an I/O error (bus error on its memory map). Unfinished outputs were deleted and "
        "nothing was renamed into place; rerun once the input is stable.\n");
    delete_temporaries();
    _exit(1);
}

static void on_termination(int sig) {
    delete_temporaries();
    signal(sig, SIG_DFL);
    raise(sig);
}

void moe_install_signal_handlers(void) {
    struct sigaction bus;
    memset(&bus, 0, sizeof bus);
    bus.sa_sigaction = on_bus_error;
    bus.sa_flags = SA_SIGINFO;
    sigemptyset(&bus.sa_mask);
    sigaction(SIGBUS, &bus, NULL);

    int deadly[] = {SIGINT, SIGTERM, SIGHUP};
    for (unsigned i = 0; i < sizeof deadly / sizeof deadly[0]; i++) {
        struct sigaction old;
        /* Leave a signal ignored by whoever started us (nohup) ignored. */
        if (sigaction(deadly[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        struct sigaction term;
        memset(&term, 0, sizeof term);
        term.sa_handler = on_termination;
        sigemptyset(&term.sa_mask);  /* one termination handler at a time */
        for (unsigned k = 0; k < sizeof deadly / sizeof deadly[0]; k++) sigaddset(&term.sa_mask, deadly[k]);
        sigaction(deadly[i], &term, NULL);
    }
    signal(SIGXFSZ, SIG_IGN);

    /* A parent may start us with these blocked (some process launchers pass on their threads'
       masks): a blocked SIGTERM would never arrive, a blocked SIGBUS kills without a word. */
    sigset_t handled;
    sigemptyset(&handled);
    sigaddset(&handled, SIGBUS);
    for (unsigned i = 0; i < sizeof deadly / sizeof deadly[0]; i++) sigaddset(&handled, deadly[i]);
    pthread_sigmask(SIG_UNBLOCK, &handled, NULL);
}
