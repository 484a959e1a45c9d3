/*
 * A minimal x86_64 kprobes port that checks itself against the conformance vectors.
 *
 * Written from docs/porting.md ("The rules a port implements") and docs/x86_64.md (the
 * decode table) only.  It implements the verdicts of the table for the encodings it can
 * size, the simulation rules, the out-of-line slot with RIP-relative relocation (the
 * displacement rewrite and the scratch-register rewrite) and the return-probe hijack, and
 * runs every x86_64 vector of a JSON Lines file through them the way a kernel port's test
 * would: decode (arch_prepare), then simulate or build the slot (the post-step path resumes
 * at the instruction after the probe), then compare with the vector.
 *
 * Usage: consumer [--unchanged] VECTORS.jsonl.  Prints one line per failing vector and a
 * summary line "checked N skipped M failed F"; exits 1 if any vector failed.
 *
 * --unchanged models a port that copies every instruction to its buffer and executes it
 * there unchanged (the seed crate's approach): nothing is refused or simulated, nothing is
 * relocated, and the post-step path resumes after the probed instruction.  It is expected
 * to fail every vector of a PC-relative class.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- a small JSON reader */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
    jtype type;
    char *str;          /* J_STR */
    int boolean;        /* J_BOOL */
    double num;         /* J_NUM */
    struct jval **items; /* J_ARR values, J_OBJ values */
    char **keys;        /* J_OBJ keys */
    size_t len;
} jval;

static const char *jp;

static void skip_ws(void) {
    while (*jp == ' ' || *jp == '\n' || *jp == '\r' || *jp == '\t') jp++;
}

static jval *jnew(jtype t) {
    jval *v = calloc(1, sizeof *v);
    v->type = t;
    return v;
}

static jval *parse_value(void);

static char *parse_string(void) {
    size_t cap = 16, n = 0;
    char *s = malloc(cap);
    jp++; /* opening quote */
    while (*jp && *jp != '"') {
        char c = *jp++;
        if (c == '\\') {
            c = *jp++;
            if (c == 'n') c = '\n';
            else if (c == 't') c = '\t';
            else if (c == 'u') { jp += 4; c = '?'; }
        }
        if (n + 2 > cap) s = realloc(s, cap *= 2);
        s[n++] = c;
    }
    jp++;
    s[n] = 0;
    return s;
}

static void push(jval *v, char *key, jval *item) {
    v->items = realloc(v->items, (v->len + 1) * sizeof *v->items);
    v->items[v->len] = item;
    if (v->type == J_OBJ) {
        v->keys = realloc(v->keys, (v->len + 1) * sizeof *v->keys);
        v->keys[v->len] = key;
    }
    v->len++;
}

static jval *parse_value(void) {
    skip_ws();
    jval *v;
    if (*jp == '{') {
        v = jnew(J_OBJ);
        jp++;
        skip_ws();
        while (*jp && *jp != '}') {
            skip_ws();
            char *key = parse_string();
            skip_ws();
            jp++; /* ':' */
            push(v, key, parse_value());
            skip_ws();
            if (*jp == ',') jp++;
            skip_ws();
        }
        jp++;
    } else if (*jp == '[') {
        v = jnew(J_ARR);
        jp++;
        skip_ws();
        while (*jp && *jp != ']') {
            push(v, NULL, parse_value());
            skip_ws();
            if (*jp == ',') jp++;
            skip_ws();
        }
        jp++;
    } else if (*jp == '"') {
        v = jnew(J_STR);
        v->str = parse_string();
    } else if (!strncmp(jp, "true", 4) || !strncmp(jp, "false", 5)) {
        v = jnew(J_BOOL);
        v->boolean = *jp == 't';
        jp += v->boolean ? 4 : 5;
    } else if (!strncmp(jp, "null", 4)) {
        v = jnew(J_NULL);
        jp += 4;
    } else {
        char *end;
        v = jnew(J_NUM);
        v->num = strtod(jp, &end);
        jp = end;
    }
    return v;
}

static void jfree(jval *v) {
    if (!v) return;
    for (size_t i = 0; i < v->len; i++) {
        jfree(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
}

static jval *get(const jval *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (!strcmp(obj->keys[i], key)) return obj->items[i];
    return NULL;
}

static const char *gets_(const jval *obj, const char *key) {
    jval *v = get(obj, key);
    return v && v->type == J_STR ? v->str : "";
}

static uint64_t hexval(const char *s) { return strtoull(s, NULL, 16); }

static size_t unhex(const char *s, uint8_t *out, size_t cap) {
    size_t n = 0;
    while (s[0] && s[1] && n < cap) {
        char b[3] = {s[0], s[1], 0};
        out[n++] = (uint8_t)strtoul(b, NULL, 16);
        s += 2;
    }
    return n;
}

/* ---------------------------------------------------------------- the architectural state */

static const char *const GPR[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                    "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};

typedef struct {
    uint64_t gpr[16];
    uint64_t rip, rflags;
} regs_t;

#define MAXREG 16
typedef struct {
    uint64_t addr;
    size_t len;
    uint8_t bytes[64];
} region_t;

typedef struct {
    region_t r[MAXREG];
    size_t n;
    int fault;
} memory_t;

static void load_regs(regs_t *r, const jval *state) {
    const jval *regs = get(state, "regs"), *flags = get(state, "flags");
    for (int i = 0; i < 16; i++) {
        jval *v = get(regs, GPR[i]);
        if (v) r->gpr[i] = hexval(v->str);
    }
    if (get(regs, "rip")) r->rip = hexval(gets_(regs, "rip"));
    if (get(flags, "rflags")) r->rflags = hexval(gets_(flags, "rflags"));
}

static void load_memory(memory_t *m, const jval *state) {
    const jval *mem = get(state, "mem");
    m->n = 0;
    m->fault = 0;
    for (size_t i = 0; mem && i < mem->len && m->n < MAXREG; i++) {
        region_t *r = &m->r[m->n++];
        r->addr = hexval(mem->items[i]->items[0]->str);
        r->len = unhex(mem->items[i]->items[1]->str, r->bytes, sizeof r->bytes);
    }
}

static uint8_t *byte_at(memory_t *m, uint64_t a) {
    for (size_t i = 0; i < m->n; i++)
        if (a - m->r[i].addr < m->r[i].len) return &m->r[i].bytes[a - m->r[i].addr];
    return NULL;
}

static uint64_t load(memory_t *m, uint64_t a, int size) {
    uint64_t v = 0;
    for (int i = size - 1; i >= 0; i--) {
        uint8_t *b = byte_at(m, a + (uint64_t)i);
        if (!b) { m->fault = 1; return 0; }
        v = v << 8 | *b;
    }
    return v;
}

static void store(memory_t *m, uint64_t a, int size, uint64_t v) {
    for (int i = 0; i < size; i++) {
        uint8_t *b = byte_at(m, a + (uint64_t)i);
        if (!b) {
            /* a written region the pre state does not list: add it */
            if (m->n == MAXREG) { m->fault = 1; return; }
            region_t *r = &m->r[m->n++];
            r->addr = a + (uint64_t)i;
            r->len = 1;
            b = r->bytes;
        }
        *b = (uint8_t)(v >> (8 * i));
    }
}

/* ---------------------------------------------------------------- decoding (arch_prepare) */

enum verdict { V_REJECT, V_SIMULATE, V_STEP, V_UNSUPPORTED };

typedef struct {
    enum verdict verdict;
    const char *klass, *reason;
    int len, opmap, opcode, modrm, rex, has_modrm, sib, disp_off, disp_size;
    int prefix66, prefix67, prefix64, prefix65, last_rep;
    int64_t disp, imm;
    int imm_size;
} insn_t;

/* Bytes after the opcode: has ModRM, immediate size; -1 = not in this port's subset. */
static int imm_size(int opmap, int op, int *modrm) {
    *modrm = 0;
    if (opmap == 1) {
        if ((op & 0xF0) == 0x70 || op == 0xEB || (op >= 0xE0 && op <= 0xE3) || op == 0xCD)
            return 1;
        if (op == 0xE9 || op == 0xE8) return 4;
        if (op == 0xC2 || op == 0xCA) return 2;
        if (op == 0xC3 || op == 0xCC || op == 0xF1 || op == 0xCF || op == 0xCB || op == 0xF4 ||
            op == 0x9C || (op >= 0x50 && op <= 0x5F))
            return 0;
        if (op == 0xFF || op == 0x8E || op == 0x01 || op == 0x39 || op == 0x87 || op == 0x89 ||
            op == 0x8B || op == 0x8D || op == 0xD3 || op == 0xF7) { *modrm = 1; return 0; }
        if (op == 0x83 || op == 0xC6) { *modrm = 1; return 1; }
        if (op == 0xC7) { *modrm = 1; return 4; }
        return -1;
    }
    if ((op & 0xF0) == 0x80) return 4;
    if (op == 0x05 || op == 0x07 || op == 0x34 || op == 0x35 || op == 0xAA || op == 0x0B)
        return 0;
    if (op == 0xB9 || op == 0xFF || op == 0x01 || op == 0xB6 || (op & 0xF0) == 0x40 ||
        (op & 0xF0) == 0x90) { *modrm = 1; return 0; }
    return -1;
}

/* Opcodes the SDM lists as invalid in 64-bit mode (and 0f 04, reserved). */
static int invalid64(int opmap, int op) {
    return opmap == 1 ? (op == 0xCE || op == 0x9A || op == 0xEA || op == 0x17) : op == 0x04;
}

typedef struct {
    const char *klass;
    int opmap, mask, match, mmask, mmatch; /* mmask 0: no ModRM condition */
    enum verdict verdict;
    const char *reason;
    int forbid; /* 1: 66; 2: 66 67; 3: 66 67 64 65 */
} row_t;

static const row_t ROWS[] = {
    {"jcc_rel8", 1, 0xF0, 0x70, 0, 0, V_SIMULATE, "branch-relative", 1},
    {"jcc_rel32", 2, 0xF0, 0x80, 0, 0, V_SIMULATE, "branch-relative", 1},
    {"jmp_rel8", 1, 0xFF, 0xEB, 0, 0, V_SIMULATE, "branch-relative", 1},
    {"jmp_rel32", 1, 0xFF, 0xE9, 0, 0, V_SIMULATE, "branch-relative", 1},
    {"call_rel32", 1, 0xFF, 0xE8, 0, 0, V_SIMULATE, "call-relative", 1},
    {"ret", 1, 0xFF, 0xC3, 0, 0, V_SIMULATE, "return", 1},
    {"ret_imm16", 1, 0xFF, 0xC2, 0, 0, V_SIMULATE, "return", 1},
    {"loopne", 1, 0xFF, 0xE0, 0, 0, V_SIMULATE, "branch-counted", 2},
    {"loope", 1, 0xFF, 0xE1, 0, 0, V_SIMULATE, "branch-counted", 2},
    {"loop", 1, 0xFF, 0xE2, 0, 0, V_SIMULATE, "branch-counted", 2},
    {"jrcxz", 1, 0xFF, 0xE3, 0, 0, V_SIMULATE, "branch-counted", 2},
    {"call_ind_reg", 1, 0xFF, 0xFF, 0xF8, 0xD0, V_SIMULATE, "call-indirect", 1},
    {"call_ind_mem", 1, 0xFF, 0xFF, 0xF8, 0x10, V_SIMULATE, "call-indirect", 3},
    {"call_ind_mem", 1, 0xFF, 0xFF, 0xF8, 0x50, V_SIMULATE, "call-indirect", 3},
    {"call_ind_mem", 1, 0xFF, 0xFF, 0xF8, 0x90, V_SIMULATE, "call-indirect", 3},
    {"jmp_ind_reg", 1, 0xFF, 0xFF, 0xF8, 0xE0, V_SIMULATE, "branch-indirect", 1},
    {"jmp_ind_mem", 1, 0xFF, 0xFF, 0xF8, 0x20, V_SIMULATE, "branch-indirect", 3},
    {"jmp_ind_mem", 1, 0xFF, 0xFF, 0xF8, 0x60, V_SIMULATE, "branch-indirect", 3},
    {"jmp_ind_mem", 1, 0xFF, 0xFF, 0xF8, 0xA0, V_SIMULATE, "branch-indirect", 3},
    {"int3", 1, 0xFF, 0xCC, 0, 0, V_REJECT, "exception-generating", 0},
    {"int_n", 1, 0xFF, 0xCD, 0, 0, V_REJECT, "exception-generating", 0},
    {"int1", 1, 0xFF, 0xF1, 0, 0, V_REJECT, "exception-generating", 0},
    {"ud0", 2, 0xFF, 0xFF, 0, 0, V_REJECT, "exception-generating", 0},
    {"ud1", 2, 0xFF, 0xB9, 0, 0, V_REJECT, "exception-generating", 0},
    {"ud2", 2, 0xFF, 0x0B, 0, 0, V_REJECT, "exception-generating", 0},
    {"iret", 1, 0xFF, 0xCF, 0, 0, V_REJECT, "privilege-change", 0},
    {"syscall", 2, 0xFF, 0x05, 0, 0, V_REJECT, "privilege-change", 0},
    {"sysret", 2, 0xFF, 0x07, 0, 0, V_REJECT, "privilege-change", 0},
    {"sysenter", 2, 0xFF, 0x34, 0, 0, V_REJECT, "privilege-change", 0},
    {"sysexit", 2, 0xFF, 0x35, 0, 0, V_REJECT, "privilege-change", 0},
    {"rsm", 2, 0xFF, 0xAA, 0, 0, V_REJECT, "privilege-change", 0},
    {"retf", 1, 0xFE, 0xCA, 0, 0, V_REJECT, "far-transfer", 0},
    {"call_far_ind", 1, 0xFF, 0xFF, 0x38, 0x18, V_REJECT, "far-transfer", 0},
    {"jmp_far_ind", 1, 0xFF, 0xFF, 0x38, 0x28, V_REJECT, "far-transfer", 0},
    {"mov_ss", 1, 0xFF, 0x8E, 0x38, 0x10, V_REJECT, "interrupt-shadow", 0},
    {"hlt", 1, 0xFF, 0xF4, 0, 0, V_REJECT, "halts", 0},
    {"xabort", 1, 0xFF, 0xC6, 0xFF, 0xF8, V_REJECT, "transactional", 0},
    {"xbegin", 1, 0xFF, 0xC7, 0xFF, 0xF8, V_REJECT, "transactional", 0},
    {"xend", 2, 0xFF, 0x01, 0xFF, 0xD5, V_REJECT, "transactional", 0},
    {"vmx", 2, 0xFF, 0x01, 0xF8, 0xC0, V_REJECT, "privilege-change", 0},
    {"svm", 2, 0xFF, 0x01, 0xF8, 0xD8, V_REJECT, "privilege-change", 0},
    {"fred_return", 2, 0xFF, 0x01, 0xFF, 0xCA, V_REJECT, "privilege-change", 0},
};

static int is_legacy_prefix(int b) {
    return b == 0xF0 || b == 0xF2 || b == 0xF3 || b == 0x2E || b == 0x36 || b == 0x3E ||
           b == 0x26 || b == 0x64 || b == 0x65 || b == 0x66 || b == 0x67;
}

static int64_t sext(uint64_t v, int bits) {
    uint64_t sign = 1ULL << (bits - 1);
    v &= bits == 64 ? ~0ULL : (sign << 1) - 1;
    return (int64_t)((v ^ sign) - sign);
}

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void decode(const uint8_t *b, size_t n, insn_t *in) {
    memset(in, 0, sizeof *in);
    in->disp_off = -1;
    size_t i = 0;
    /* The prefix area mixes legacy and REX bytes in any order; only a REX standing last
       (right before the opcode) counts, the CPU ignores the others. */
    while (i < n && (is_legacy_prefix(b[i]) || (b[i] & 0xF0) == 0x40)) {
        in->prefix66 |= b[i] == 0x66;
        in->prefix67 |= b[i] == 0x67;
        in->prefix64 |= b[i] == 0x64;
        in->prefix65 |= b[i] == 0x65;
        if (b[i] == 0xF2 || b[i] == 0xF3) in->last_rep = b[i];
        in->rex = (b[i] & 0xF0) == 0x40 ? b[i] : 0;
        i++;
    }
    in->opmap = 1;
    if (i < n && b[i] == 0x0F) { in->opmap = 2; i++; }
    if (i >= n) { in->verdict = V_UNSUPPORTED; return; }
    in->opcode = b[i++];
    if (invalid64(in->opmap, in->opcode)) {
        in->verdict = V_REJECT; in->klass = "undecodable"; in->reason = "undecodable";
        in->len = (int)i;
        return;
    }
    int has_modrm, isz = imm_size(in->opmap, in->opcode, &has_modrm);
    if (isz < 0) { in->verdict = V_UNSUPPORTED; return; }
    if (has_modrm) {
        in->has_modrm = 1;
        in->modrm = b[i++];
        int mod = in->modrm >> 6, rm = in->modrm & 7;
        if (mod != 3 && rm == 4) in->sib = b[i++] | 0x100;
        if (mod == 1) in->disp_size = 1;
        else if (mod == 2 || (mod == 0 && rm == 5) ||
                 (mod == 0 && (in->sib & 0x100) && (in->sib & 7) == 5))
            in->disp_size = 4;
        if (in->disp_size) {
            if (mod == 0 && rm == 5) in->disp_off = (int)i;
            in->disp = sext(le(b + i, in->disp_size), 8 * in->disp_size);
            i += (size_t)in->disp_size;
        }
        /* F7 /0 and /1 (test) carry an immediate; this port takes only /2../7. */
        if (in->opmap == 1 && in->opcode == 0xF7 && ((in->modrm >> 3) & 7) < 2) {
            in->verdict = V_UNSUPPORTED; return;
        }
    }
    in->imm_size = isz;
    in->imm = isz ? sext(le(b + i, isz), 8 * isz) : 0;
    in->len = (int)(i + (size_t)isz);
    for (size_t r = 0; r < sizeof ROWS / sizeof ROWS[0]; r++) {
        const row_t *row = &ROWS[r];
        if (row->opmap != in->opmap || (in->opcode & row->mask) != row->match) continue;
        if (row->mmask && (!in->has_modrm || (in->modrm & row->mmask) != row->mmatch)) continue;
        if (strcmp(row->klass, "fred_return") == 0 && !in->last_rep) continue;  /* else CLAC */
        in->klass = row->klass;
        in->verdict = row->verdict;
        in->reason = row->reason;
        if (row->forbid >= 1 && in->prefix66) { in->verdict = V_REJECT; in->reason = "operand-size-branch"; }
        else if (row->forbid >= 2 && in->prefix67) { in->verdict = V_REJECT; in->reason = "address-size-branch"; }
        else if (row->forbid >= 3 && (in->prefix64 || in->prefix65)) { in->verdict = V_REJECT; in->reason = "segment-relative-target"; }
        return;
    }
    in->verdict = V_STEP;
    in->klass = in->disp_off >= 0 ? "rip_relative" : "plain";
    in->reason = in->disp_off >= 0 ? "rip-relative-operand" : "no-pc-use";
}

/* ---------------------------------------------------------------- simulation */

static int cond(int cc, uint64_t f) {
    int cf = f & 1, pf = f >> 2 & 1, zf = f >> 6 & 1, sf = f >> 7 & 1, of = f >> 11 & 1;
    int base[8] = {of, cf, zf, cf | zf, sf, pf, sf != of, zf | (sf != of)};
    return base[cc >> 1] ^ (cc & 1);
}

static uint64_t effective_address(const insn_t *in, const regs_t *r, uint64_t next) {
    int mod = in->modrm >> 6, rm = in->modrm & 7;
    uint64_t ea = (uint64_t)in->disp;
    if (mod == 0 && rm == 5) return next + ea;
    if (in->sib) {
        int s = in->sib & 0xFF, base = s & 7, index = (s >> 3 & 7) | (in->rex & 2 ? 8 : 0);
        if (!(mod == 0 && base == 5)) ea += r->gpr[base | (in->rex & 1 ? 8 : 0)];
        if (index != 4) ea += r->gpr[index] << (s >> 6);
        return ea;
    }
    return ea + r->gpr[rm | (in->rex & 1 ? 8 : 0)];
}

static void push64(regs_t *r, memory_t *m, uint64_t v) {
    r->gpr[4] -= 8;
    store(m, r->gpr[4], 8, v);
}

static void simulate(const insn_t *in, uint64_t addr, regs_t *r, memory_t *m) {
    uint64_t next = addr + (uint64_t)in->len, target = next + (uint64_t)in->imm;
    const char *k = in->klass;
    if (!strcmp(k, "jcc_rel8") || !strcmp(k, "jcc_rel32")) {
        r->rip = cond(in->opcode & 15, r->rflags) ? target : next;
    } else if (!strcmp(k, "jmp_rel8") || !strcmp(k, "jmp_rel32")) {
        r->rip = target;
    } else if (!strcmp(k, "call_rel32")) {
        push64(r, m, next);
        r->rip = target;
    } else if (!strcmp(k, "ret") || !strcmp(k, "ret_imm16")) {
        uint64_t to = load(m, r->gpr[4], 8);
        r->gpr[4] += 8 + (uint64_t)(in->imm & 0xFFFF);
        r->rip = to;
    } else if (!strcmp(k, "jrcxz")) {
        r->rip = r->gpr[1] == 0 ? target : next;
    } else if (!strncmp(k, "loop", 4)) {
        int zf = r->rflags >> 6 & 1, taken;
        r->gpr[1] -= 1;
        taken = r->gpr[1] != 0;
        if (!strcmp(k, "loope")) taken &= zf;
        if (!strcmp(k, "loopne")) taken &= !zf;
        r->rip = taken ? target : next;
    } else {
        int mod = in->modrm >> 6;
        uint64_t to = mod == 3 ? r->gpr[(in->modrm & 7) | (in->rex & 1 ? 8 : 0)]
                               : load(m, effective_address(in, r, next), 8);
        if (!strncmp(k, "call", 4)) push64(r, m, next);
        r->rip = to;
    }
}

/* ---------------------------------------------------------------- slots and relocation */

static int build_slot(const uint8_t *raw, const insn_t *in, uint64_t addr, uint64_t slot,
                      int user, uint8_t *out, const char **scratch) {
    memcpy(out, raw, (size_t)in->len);
    out[in->len] = 0xCC;
    *scratch = NULL;
    if (in->disp_off < 0) return in->len + 1;
    __int128 nd = (__int128)in->disp + (__int128)(int64_t)(addr - slot);
    if (nd >= -((__int128)1 << 31) && nd < ((__int128)1 << 31)) {
        uint32_t d = (uint32_t)(int64_t)nd;
        for (int i = 0; i < 4; i++) out[in->disp_off + i] = (uint8_t)(d >> (8 * i));
        return in->len + 1;
    }
    if (!user) return -1; /* rip-relative-out-of-reach */
    static const int choice[3] = {6, 7, 3};
    static const char *const name[3] = {"rsi", "rdi", "rbx"};
    int reg = in->modrm >> 3 & 7;
    for (int c = 0; c < 3; c++) {
        if (choice[c] == reg) continue;
        out[in->disp_off - 1] = (uint8_t)(0x80 | reg << 3 | choice[c]);
        for (int i = 0; i < in->disp_off - 1; i++)
            if ((out[i] & 0xF0) == 0x40) out[i] &= 0xFE;
        *scratch = name[c];
        return in->len + 1;
    }
    return -1;
}

/* ---------------------------------------------------------------- the conformance loop */

static int failures, checked, skipped, unchanged;

/* Where the --unchanged model's buffer lies. */
#define BUFFER 0x7000000000000ULL

static void fail(const jval *v, const char *what) {
    failures++;
    printf("FAIL %s (%s %s): %s\n", gets_(v, "id"), gets_(v, "row"), gets_(v, "case"), what);
}

static const char *vname(enum verdict v) {
    return v == V_REJECT ? "reject" : v == V_SIMULATE ? "simulate" : "step";
}

static void compare_state(const jval *v, const regs_t *r, memory_t *m, const regs_t *pre) {
    const jval *post = get(v, "post"), *pregs = get(post, "regs");
    char msg[160];
    for (int i = 0; i < 16; i++) {
        jval *e = get(pregs, GPR[i]);
        uint64_t want = e ? hexval(e->str) : pre->gpr[i];
        if (r->gpr[i] != want) {
            snprintf(msg, sizeof msg, "%s = %#llx, expected %#llx", GPR[i],
                     (unsigned long long)r->gpr[i], (unsigned long long)want);
            fail(v, msg);
            return;
        }
    }
    if (r->rip != hexval(gets_(pregs, "rip"))) {
        snprintf(msg, sizeof msg, "rip = %#llx, expected %s", (unsigned long long)r->rip,
                 gets_(pregs, "rip"));
        fail(v, msg);
        return;
    }
    if (r->rflags != hexval(gets_(get(post, "flags"), "rflags"))) { fail(v, "rflags differ"); return; }
    memory_t want;
    load_memory(&want, post);
    for (size_t i = 0; i < want.n; i++)
        for (size_t j = 0; j < want.r[i].len; j++) {
            uint8_t *b = byte_at(m, want.r[i].addr + j);
            if (!b || *b != want.r[i].bytes[j]) { fail(v, "memory written differs"); return; }
        }
}

/* The seed crate's way: run the instruction at BUFFER, resume at the next instruction. */
static void check_unchanged(const jval *v, const uint8_t *raw, const insn_t *in, uint64_t addr) {
    if (!strcmp(gets_(v, "verdict"), "reject")) { fail(v, "probed an instruction that must be refused"); return; }
    regs_t r = {0}, pre;
    memory_t m;
    load_regs(&r, get(v, "pre"));
    load_memory(&m, get(v, "pre"));
    pre = r;
    if (in->verdict == V_SIMULATE) {
        simulate(in, BUFFER, &r, &m); /* what the CPU does with it in the buffer */
        r.rip = addr + (uint64_t)in->len;
        if (m.fault) { fail(v, "reads memory relative to the buffer"); return; }
        compare_state(v, &r, &m, &pre);
        return;
    }
    uint8_t want[40];
    size_t wn = unhex(gets_(v, "slot_bytes"), want, sizeof want);
    if (wn != (size_t)in->len + 1 || memcmp(raw, want, (size_t)in->len))
        fail(v, "runs a PC-relative operand unrelocated");
}

static void check_kprobe(const jval *v) {
    uint8_t raw[32];
    size_t n = unhex(gets_(v, "bytes"), raw, sizeof raw);
    uint64_t addr = hexval(gets_(v, "addr"));
    int user = get(v, "user")->boolean;
    insn_t in;
    decode(raw, n, &in);
    if (in.verdict == V_UNSUPPORTED) { skipped++; return; }
    checked++;
    const char *want_verdict = gets_(v, "verdict"), *want_reason = gets_(v, "reason");
    if (unchanged) {
        check_unchanged(v, raw, &in, addr);
        return;
    }
    if (!strcmp(want_reason, "rip-relative-out-of-reach")) {
        /* refused at slot placement: the relocation from the slot tried must not fit */
        uint8_t slot[40];
        const char *scratch;
        if (in.verdict != V_STEP || in.disp_off < 0 ||
            build_slot(raw, &in, addr, hexval(gets_(v, "slot_addr")), user, slot, &scratch) >= 0)
            fail(v, "relocation fits, the vector says out of reach");
        return;
    }
    if (strcmp(vname(in.verdict), want_verdict) || strcmp(in.reason, want_reason)) {
        char msg[160];
        snprintf(msg, sizeof msg, "verdict %s/%s, expected %s/%s", vname(in.verdict), in.reason,
                 want_verdict, want_reason);
        fail(v, msg);
        return;
    }
    if (in.verdict == V_REJECT) return;
    regs_t r = {0}, pre;
    memory_t m;
    load_regs(&r, get(v, "pre"));
    load_memory(&m, get(v, "pre"));
    pre = r;
    if (in.verdict == V_SIMULATE) {
        simulate(&in, addr, &r, &m);
        if (m.fault) { fail(v, "the rule read memory the vector does not give"); return; }
    } else {
        uint8_t slot[40], want[40];
        const char *scratch;
        uint64_t slot_addr = hexval(gets_(v, "slot_addr"));
        int len = build_slot(raw, &in, addr, slot_addr, user, slot, &scratch);
        size_t wn = unhex(gets_(v, "slot_bytes"), want, sizeof want);
        /* The relocated instruction must match exactly; the slot then ends in the
         * end-of-step int3, or (a boosted slot) in a jmp rel32 back to the resume address. */
        int tail_ok = (size_t)len == wn && want[in.len] == 0xCC;
        if (wn == (size_t)in.len + 5 && want[in.len] == 0xE9)
            tail_ok = slot_addr + wn + (uint64_t)sext(le(want + in.len + 1, 4), 32) ==
                      addr + (uint64_t)in.len;
        if (len < 0 || !tail_ok || memcmp(slot, want, (size_t)in.len)) { fail(v, "slot bytes differ"); return; }
        jval *sc = get(v, "slot_scratch");
        if ((sc != NULL) != (scratch != NULL) || (sc && strcmp(gets_(sc, "reg"), scratch))) {
            fail(v, "scratch register differs");
            return;
        }
        /* the post-step path: resume after the probed instruction */
        uint64_t resume = addr + (uint64_t)in.len;
        if (resume != hexval(gets_(v, "resume_addr"))) { fail(v, "resume address differs"); return; }
        /* the stepped instruction's own effect is the CPU's: take it from the vector */
        regs_t stepped = r;
        load_regs(&stepped, get(v, "post"));
        memory_t after;
        load_memory(&after, get(v, "post"));
        for (size_t i = 0; i < after.n; i++)
            for (size_t j = 0; j < after.r[i].len; j++)
                store(&m, after.r[i].addr + j, 1, after.r[i].bytes[j]);
        r = stepped;
        r.rip = resume;
    }
    compare_state(v, &r, &m, &pre);
}

static void check_kretprobe(const jval *v) {
    checked++;
    regs_t r = {0};
    memory_t m;
    load_regs(&r, get(v, "pre"));
    load_memory(&m, get(v, "pre"));
    uint64_t tramp = hexval(gets_(v, "trampoline")), real = load(&m, r.gpr[4], 8);
    store(&m, r.gpr[4], 8, tramp);
    memory_t want;
    load_memory(&want, get(v, "hijack"));
    if (want.n != 1 || want.r[0].addr != r.gpr[4] || load(&m, r.gpr[4], 8) != le(want.r[0].bytes, 8))
        fail(v, "hijacked return address differs");
    if (real != hexval(gets_(v, "real_ret"))) fail(v, "saved return address differs");
    /* at the trampoline trap: continue at the saved address */
    if (real != hexval(gets_(get(get(v, "post"), "regs"), "rip"))) fail(v, "return lands elsewhere");
}

int main(int argc, char **argv) {
    unchanged = argc == 3 && !strcmp(argv[1], "--unchanged");
    if (argc != 2 + unchanged) {
        fprintf(stderr, "usage: %s [--unchanged] VECTORS.jsonl\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[argc - 1], "r");
    if (!f) { perror(argv[argc - 1]); return 2; }
    static char line[1 << 20];
    while (fgets(line, sizeof line, f)) {
        jp = line;
        jval *v = parse_value();
        if (!strcmp(gets_(v, "isa"), "x86_64")) {
            if (!strcmp(gets_(v, "kind"), "kretprobe")) check_kretprobe(v);
            else check_kprobe(v);
        }
        jfree(v);
    }
    fclose(f);
    printf("checked %d skipped %d failed %d\n", checked, skipped, failures);
    return failures ? 1 : 0;
}
