# A 4-byte variable straddling an 8-byte boundary: two WRPs, hits on either half.
watch unaligned_word
continue
continue
continue
monitor slots
