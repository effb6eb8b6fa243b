/* Compile-time limits of the firmware. A port may override any of them with -D.
 *
 * Every buffer of the firmware is static and sized here: nothing is allocated at run time.
 * The host port sets the part it plays (flash geometry, arena, frame size) at start-up within
 * these limits; a microcontroller port fixes them to its part.
 */
#ifndef MK_CONFIG_H
#define MK_CONFIG_H

#include <stdint.h>

/* Activation arena: the two ping-pong int8 buffers (docs/PACKAGE.md, "RAM"), in bytes. */
#ifndef MK_ARENA_BYTES
#define MK_ARENA_BYTES 65536u
#endif

/* Where the arena goes: a port may give it a section of its own (e.g.
 * __attribute__((section(".arena")))), so that the image's sizes list it apart. */
#ifndef MK_ARENA_PLACE
#define MK_ARENA_PLACE
#endif

/* Largest frame payload the receive buffer takes (INFO max_payload is at most this). */
#ifndef MK_MAX_PAYLOAD
#define MK_MAX_PAYLOAD 1024u
#endif

/* 1: RESULT carries the cycle model's estimate (mk_cycle_estimate) where the port measures
 * nothing (mk_device_config.measure 0), as the simulator's does. 0: a build for a port that
 * always measures leaves the cycle model out (a port that then measures nothing reports 0). */
#ifndef MK_CYCLE_MODEL
#define MK_CYCLE_MODEL 1
#endif

/* Largest number of pages of one model slot (one bit each: pages erased by the upload). */
#ifndef MK_MAX_SLOT_PAGES
#define MK_MAX_SLOT_PAGES 4096u
#endif

/* Largest number of commit records on the two record pages (one bit each at boot). */
#ifndef MK_MAX_RECORDS
#define MK_MAX_RECORDS 4096u
#endif

/* Longest NAK message, in bytes of UTF-8; a longer one is cut at a character boundary
 * (docs/PROTOCOL.md). */
#define MK_TEXT_MAX 240u

/* Byte ranges an upload tracks past the bytes received in order (firmware_sim.device.MAX_AHEAD). */
#define MK_MAX_AHEAD 16u

/* Layers of a package (export.contract.package.MAX_LAYERS). */
#define MK_MAX_LAYERS 16u

#define MK_PROTOCOL_VERSION 2u

/* Frame overhead before COBS: type u8, seq u16, length u16, crc32 u32. */
#define MK_FRAME_OVERHEAD 9u

/* Longest COBS encoding of n bytes: one code byte per 254 data bytes, at least one. */
#define MK_COBS_MAX(n) ((n) + (n) / 254u + 1u)

/* A function kept out of line where the compiler would inline it into a large caller at more
 * cost than a call (each use measured: docs/SPEED.md, "Firmware size"). */
#if defined(__GNUC__)
#define MK_NOINLINE __attribute__((noinline))
#else
#define MK_NOINLINE
#endif

/* Right shifts of negative signed integers are implementation-defined in C99. The fast paths
 * use them and need them arithmetic (every compiler we build with defines them so); this
 * fails to compile where that does not hold. The reference paths do not shift negative
 * numbers at all. */
typedef char mk_assert_arithmetic_shift[((-1 >> 1) == -1 && (-8 >> 2) == -2) ? 1 : -1];
typedef char mk_assert_arithmetic_shift64[(INT64_C(-1099511627776) >> 39) == -2 ? 1 : -1];

#endif
