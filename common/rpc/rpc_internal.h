/* rpc_internal.h: glue shared by server.c and client.c (not for services): protobuf-c
 * messages <-> grpc_byte_buffer, deadlines, metadata lookups. */
#ifndef AHA_RPC_INTERNAL_H
#define AHA_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "rpc/rpc.h"

#define AHA__RPC_DEFAULT_MAX_BYTES ((int64_t)64 << 20)

/* Serialise msg into a new single-slice byte buffer (one copy). NULL when the packed size
 * exceeds max_bytes (>0); *packed_len gets the size either way. */
grpc_byte_buffer *aha__rpc_pack(const ProtobufCMessage *msg, int64_t max_bytes,
                                size_t *packed_len);
/* Parse bb as desc. In place when bb is one uncompressed slice, else after one flatten.
 * NULL when it does not parse. bb is not consumed. */
ProtobufCMessage *aha__rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);
/* All bytes of bb into one slice (a ref on the only slice, or one copy). */
grpc_slice aha__rpc_flatten(grpc_byte_buffer *bb);
/* Parse the protobuf message in buf as desc, except that the last top-level occurrence of
 * length-delimited field `field` is left out and reported as [*data, *data + *dlen) inside
 * buf (NULL/0 when absent). NULL when buf does not parse. */
ProtobufCMessage *aha__rpc_unpack_split(const ProtobufCMessageDescriptor *desc,
                                        const uint8_t *buf, size_t n, unsigned field,
                                        const uint8_t **data, size_t *dlen);
/* Method index of `name` in svc, or -1. */
int aha__rpc_find_method(const ProtobufCServiceDescriptor *svc, const char *name);
/* Absolute monotonic deadline ms from now; inf_future when ms <= 0. */
gpr_timespec aha__rpc_deadline(int ms);
/* Compare a slice with a C string. */
int aha__rpc_slice_eq(grpc_slice s, const char *str);
/* Read a small PEM file, NUL-terminated; malloc'ed. */
aha_status aha__rpc_read_pem(const char *path, char **out, aha_err *err);
/* One-time grpc_init per user (server or channel); balanced by aha__rpc_release. */
void aha__rpc_acquire(void);
void aha__rpc_release(void);

#endif
