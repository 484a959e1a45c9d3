/* Checksums over caller-provided byte buffers (lengths clamped to 255). */
#include <stdint.h>

uint32_t byte_checksum(const uint8_t *p, uint64_t n)
{
	uint32_t s = 0;

	n &= 255;
	for (uint64_t i = 0; i < n; i++)
		s += p[i] ^ (uint32_t)i;
	return s;
}

/* Reflected CRC-32 (polynomial 0xEDB88320), one bit at a time. */
uint32_t crc32_bitwise(const uint8_t *p, uint64_t n)
{
	uint32_t crc = 0xffffffffu;

	n &= 255;
	for (uint64_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++) {
			uint32_t mask = (uint32_t)0 - (crc & 1);
			crc = (crc >> 1) ^ (0xedb88320u & mask);
		}
	}
	return ~crc;
}

uint32_t adler32(const uint8_t *p, uint64_t n)
{
	uint32_t a = 1, b = 0;

	n &= 255;
	for (uint64_t i = 0; i < n; i++) {
		a = (a + p[i]) % 65521u;
		b = (b + a) % 65521u;
	}
	return (b << 16) | a;
}

uint16_t fletcher16(const uint8_t *p, uint64_t n)
{
	uint16_t s1 = 0, s2 = 0;

	n &= 255;
	for (uint64_t i = 0; i < n; i++) {
		s1 = (uint16_t)((s1 + p[i]) % 255);
		s2 = (uint16_t)((s2 + s1) % 255);
	}
	return (uint16_t)((s2 << 8) | s1);
}

/* 64-bit FNV-1a over signed bytes (sign extension is explicit). */
uint64_t fnv1a_signed(const int8_t *p, uint64_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	n &= 255;
	for (uint64_t i = 0; i < n; i++) {
		h ^= (uint64_t)(int64_t)p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}
