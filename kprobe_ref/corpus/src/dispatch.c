/* Control-flow dispatch: a dense switch (jump table), a table of function
 * pointers indexed by an argument, and a byte-driven state machine. */
#include <stdint.h>

/* Dense switch with 16 cases doing different work, so the compiler emits
 * an indirect jump through a table rather than a value lookup. */
uint64_t dense_switch(uint64_t sel, uint64_t x)
{
	switch (sel & 15) {
	case 0: return x + 1;
	case 1: return x * 3 + 7;
	case 2: return x ^ 0x5555;
	case 3: return x << 4;
	case 4: return x >> 3;
	case 5: return ~x;
	case 6: return x * x;
	case 7: return (x & 0xff) | 0x1000;
	case 8: return x - 99;
	case 9: return (x << 32) | (x >> 32);
	case 10: return x / 9;
	case 11: return x % 17;
	case 12: return x + (x >> 1);
	case 13: return (uint64_t)((int64_t)x >> 5);
	case 14: return x & (x - 1);
	default: return 0xdead0000 + x;
	}
}

typedef uint64_t (*binop_fn)(uint64_t, uint64_t);

__attribute__((noinline)) uint64_t op_add(uint64_t a, uint64_t b) { return a + b; }
__attribute__((noinline)) uint64_t op_sub(uint64_t a, uint64_t b) { return a - b; }
__attribute__((noinline)) uint64_t op_mul(uint64_t a, uint64_t b) { return a * b; }
__attribute__((noinline)) uint64_t op_xor(uint64_t a, uint64_t b) { return a ^ b; }
__attribute__((noinline)) uint64_t op_udiv(uint64_t a, uint64_t b) { return b ? a / b : 0; }
__attribute__((noinline)) uint64_t op_min(uint64_t a, uint64_t b) { return a < b ? a : b; }

binop_fn const op_table[8] = {
	op_add, op_sub, op_mul, op_xor, op_udiv, op_min, op_add, op_xor,
};

/* Calls through the function-pointer table indexed by sel. */
uint64_t call_op(uint64_t sel, uint64_t a, uint64_t b)
{
	return op_table[sel & 7](a, b) + (sel & 7);
}

/* Folds a byte buffer through the table: each byte picks the operation. */
uint64_t fold_ops(const uint8_t *p, uint64_t n, uint64_t seed)
{
	uint64_t acc = seed;

	n &= 63;
	for (uint64_t i = 0; i < n; i++)
		acc = op_table[p[i] & 7](acc, (uint64_t)p[i] + 1);
	return acc;
}

enum lex_state { LS_SPACE, LS_WORD, LS_NUMBER, LS_COMMENT };

/* A small lexer: counts words, numbers (and sums them) and skips '#'
 * comments to end of line.  Stops at NUL or after 255 bytes. */
uint64_t lex_count(const uint8_t *p)
{
	enum lex_state st = LS_SPACE;
	uint32_t words = 0, numbers = 0, sum = 0, cur = 0;

	for (int i = 0; i < 255 && p[i]; i++) {
		uint8_t c = p[i];
		int digit = c >= '0' && c <= '9';
		int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';

		switch (st) {
		case LS_SPACE:
			if (c == '#') {
				st = LS_COMMENT;
			} else if (digit) {
				st = LS_NUMBER;
				cur = c - '0';
			} else if (alpha) {
				st = LS_WORD;
				words++;
			}
			break;
		case LS_WORD:
			if (!alpha && !digit)
				st = c == '#' ? LS_COMMENT : LS_SPACE;
			break;
		case LS_NUMBER:
			if (digit) {
				cur = cur * 10 + (c - '0');
			} else {
				numbers++;
				sum += cur;
				st = c == '#' ? LS_COMMENT : LS_SPACE;
			}
			break;
		case LS_COMMENT:
			if (c == '\n')
				st = LS_SPACE;
			break;
		}
	}
	if (st == LS_NUMBER) {
		numbers++;
		sum += cur;
	}
	return ((uint64_t)words << 48) | ((uint64_t)numbers << 32) | sum;
}

/* A traffic-light style machine stepped n times by an input bit stream. */
uint32_t traffic_fsm(uint64_t inputs, uint64_t steps)
{
	uint32_t state = 0, trace = 0;

	steps &= 63;
	for (uint64_t i = 0; i < steps; i++) {
		uint32_t in = (uint32_t)(inputs >> (i & 63)) & 1;

		switch (state) {
		case 0: state = in ? 1 : 0; break;
		case 1: state = in ? 2 : 0; break;
		case 2: state = in ? 2 : 3; break;
		default: state = 0; break;
		}
		trace = trace * 5 + state;
	}
	return trace ^ (state << 28);
}
