#!/bin/sh
# The sizes of a Cortex-M image: code and constants (text), static RAM (data + bss), and apart
# from it the receive ring and the activation arena.  usage: sizes.sh SIZE-PROGRAM ELF
size=$1; elf=$2
$size -A "$elf" | awk -v elf="$(basename "$elf")" '
    $1 == ".text" || $1 == ".ARM.exidx" { text += $2 }
    $1 == ".data" { data = $2; text += $2 }
    $1 == ".bss" { bss = $2 }
    $1 == ".ring" { ring = $2 }
    $1 == ".arena" { arena = $2 }
    $1 == ".stack" { stack = $2 }
    END { printf "%s: text %d B (flash), static RAM %d B (data %d + bss %d), receive ring %d B, arena %d B, stack %d B\n", elf, text, data + bss, data, bss, ring, arena, stack }'
