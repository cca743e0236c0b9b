// Runs ggml's AMX tile-config init as this compiler built it and prints the 64 bytes it
// hands to `ldtilecfg`, on any x86-64 CPU (llama-sys/build/amx_check.rs).
//
// The init code (probe_init, compiled from the tree's own text) ends in `ldtilecfg m512`.
// Without AMX (or without the kernel's permission) that instruction traps with SIGILL;
// with AMX and a malformed config it raises #GP (SIGSEGV). The handler decodes the
// instruction's memory operand from the saved registers, copies the 64 bytes and steps
// over it. Where the instruction runs, `sttilecfg` reads back what was loaded.
// Output: 128 hex digits and how they were read (emulated, rejected, loaded).
// Exit 3: a trap at something else than ldtilecfg (the probe cannot judge this build).
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

void probe_init(void);

static unsigned char seen[64];
static volatile sig_atomic_t trapped = 0;

// x86 register numbers (ModRM/SIB order) -> glibc's gregs indices.
static const int greg_of[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
                                REG_R8,  REG_R9,  REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15};

static int32_t disp32(const unsigned char * p) {
    int32_t d;
    memcpy(&d, p, 4);
    return d;
}

static void on_trap(int sig, siginfo_t *, void * ctx) {
    ucontext_t * uc = (ucontext_t *) ctx;
    greg_t * r = uc->uc_mcontext.gregs;
    const unsigned char * ip = (const unsigned char *) r[REG_RIP];
    // ldtilecfg m512 = VEX.128.NP.0F38.W0 49 /0: C4 [~R~X~B 00010] [0 1111 0 00] 49 ModRM ...
    if (ip[0] != 0xC4 || (ip[1] & 0x1f) != 0x02 || ip[3] != 0x49 || ((ip[4] >> 3) & 7) != 0 || (ip[4] >> 6) == 3) {
        _exit(3);
    }
    const int rex_x = (ip[1] & 0x40) ? 0 : 8;
    const int rex_b = (ip[1] & 0x20) ? 0 : 8;
    const int mod = ip[4] >> 6, rm = ip[4] & 7;
    const unsigned char * p = ip + 5;
    intptr_t addr = 0;
    if (rm == 4) {
        const unsigned char sib = *p++;
        const int scale = sib >> 6, index = ((sib >> 3) & 7) | rex_x, base = (sib & 7) | rex_b;
        if (index != 4) {
            addr += (intptr_t) r[greg_of[index]] << scale;
        }
        if ((base & 7) == 5 && mod == 0) {
            addr += disp32(p);
            p += 4;
        } else {
            addr += (intptr_t) r[greg_of[base]];
        }
    } else if (rm == 5 && mod == 0) {
        addr = (intptr_t) (p + 4) + disp32(p);  // RIP-relative
        p += 4;
    } else {
        addr = (intptr_t) r[greg_of[rm | rex_b]];
    }
    if (mod == 1) {
        addr += (int8_t) *p;
        p += 1;
    } else if (mod == 2) {
        addr += disp32(p);
        p += 4;
    }
    memcpy(seen, (const void *) addr, sizeof seen);
    trapped = sig;
    r[REG_RIP] = (greg_t) p;
}

int main() {
    // ARCH_REQ_XCOMP_PERM for XTILEDATA, as ggml does; fails harmlessly without AMX.
    syscall(SYS_arch_prctl, 0x1023, 18);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGILL, &sa, nullptr);
    sigaction(SIGSEGV, &sa, nullptr);
    probe_init();
    if (!trapped) {
        __asm__ __volatile__("sttilecfg %X0" : "=m"(*(unsigned char (*)[64]) seen));
        __asm__ __volatile__("tilerelease");
    }
    for (unsigned char b : seen) {
        printf("%02x", b);
    }
    printf(" %s\n", trapped == SIGILL ? "emulated" : trapped ? "rejected" : "loaded");
    return 0;
}
