# format/ — the .nq file: reader, writer, checksums.  See format/SPEC.md.
LIBNQ_SRCS +=
