/* codec.c: protobuf-c <-> gRPC byte buffers, status-code names and mapping, method paths.
 *
 * Copies: packing writes straight into a gRPC-owned slice (one copy of the payload);
 * unpacking parses in place when the message arrived as one uncompressed slice and
 * otherwise flattens it once. protobuf-c then copies `bytes` and `string` fields into its
 * own allocations, which is unavoidable with its API. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "base/fs.h"
#include "rpc_internal.h"

grpc_byte_buffer *aha__rpc_pack(const ProtobufCMessage *msg, int64_t max_bytes,
                                size_t *packed_len)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (packed_len) *packed_len = len;
    if (max_bytes > 0 && (uint64_t)len > (uint64_t)max_bytes) return NULL;
    grpc_slice s = grpc_slice_malloc(len);
    size_t n = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    AHA_ASSERT(n == len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s); /* the buffer holds its own ref */
    return bb;
}

grpc_slice aha__rpc_flatten(grpc_byte_buffer *bb)
{
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1)
        return grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return grpc_empty_slice();
    grpc_slice all = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return all;
}

ProtobufCMessage *aha__rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    if (!bb) return NULL;
    grpc_slice s = aha__rpc_flatten(bb);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

/* Read a varint at *p (< end); 0 when truncated or longer than 10 bytes. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 70 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 1;
        }
    }
    return 0;
}

ProtobufCMessage *aha__rpc_unpack_split(const ProtobufCMessageDescriptor *desc,
                                        const uint8_t *buf, size_t n, unsigned field,
                                        const uint8_t **data, size_t *dlen)
{
    *data = NULL;
    *dlen = 0;
    /* Walk the top-level fields to find the last occurrence of `field` (protobuf: the last
     * one wins for a singular field). Every length is checked against the buffer. */
    const uint8_t *p = buf, *end = buf + n;
    const uint8_t *cut_lo = NULL, *cut_hi = NULL;
    while (p < end) {
        const uint8_t *start = p;
        uint64_t key, v;
        if (!read_varint(&p, end, &key)) return NULL;
        unsigned wt = (unsigned)(key & 7);
        uint64_t num = key >> 3;
        switch (wt) {
        case 0:
            if (!read_varint(&p, end, &v)) return NULL;
            break;
        case 1:
            if (end - p < 8) return NULL;
            p += 8;
            break;
        case 5:
            if (end - p < 4) return NULL;
            p += 4;
            break;
        case 2:
            if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p)) return NULL;
            if (num == field) {
                cut_lo = start;
                cut_hi = p + v;
                *data = p;
                *dlen = (size_t)v;
            }
            p += v;
            break;
        default: return NULL; /* groups are not used by aha's protos */
        }
    }
    if (!cut_lo) return protobuf_c_message_unpack(desc, NULL, n, buf);
    /* Parse everything but the cut field; the rest is small (names, shapes, offsets). */
    size_t rest = n - (size_t)(cut_hi - cut_lo);
    uint8_t *tmp = malloc(rest ? rest : 1);
    if (!tmp) return NULL;
    memcpy(tmp, buf, (size_t)(cut_lo - buf));
    memcpy(tmp + (cut_lo - buf), cut_hi, (size_t)(end - cut_hi));
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, rest, tmp);
    free(tmp);
    if (!m) {
        *data = NULL;
        *dlen = 0;
    }
    return m;
}

int aha__rpc_find_method(const ProtobufCServiceDescriptor *svc, const char *name)
{
    for (unsigned i = 0; i < svc->n_methods; i++)
        if (strcmp(svc->methods[i].name, name) == 0) return (int)i;
    return -1;
}

aha_status aha_rpc_method_path(const ProtobufCServiceDescriptor *svc, const char *method,
                               char *buf, size_t cap, aha_err *err)
{
    if (aha__rpc_find_method(svc, method) < 0)
        return aha_errf(err, AHA_EINVAL, "service %s has no method %s", svc->name, method);
    int n = snprintf(buf, cap, "/%s/%s", svc->name, method);
    if (n < 0 || (size_t)n >= cap)
        return aha_errf(err, AHA_EINVAL, "method path /%s/%s too long", svc->name, method);
    return AHA_OK;
}

gpr_timespec aha__rpc_deadline(int ms)
{
    if (ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

int aha__rpc_slice_eq(grpc_slice s, const char *str)
{
    size_t n = strlen(str);
    return GRPC_SLICE_LENGTH(s) == n && memcmp(GRPC_SLICE_START_PTR(s), str, n) == 0;
}

aha_status aha__rpc_read_pem(const char *path, char **out, aha_err *err)
{
    size_t len = 0;
    return aha_read_file(path, 1 << 20, out, &len, err);
}

static const char *const code_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED"};

const char *aha_rpc_code_name(int code)
{
    return code >= 0 && (size_t)code < AHA_ARRAY_LEN(code_names) ? code_names[code] : "UNKNOWN";
}

aha_status aha_rpc_status_from_code(int code)
{
    switch (code) {
    case 0: return AHA_OK;
    case 1: return AHA_ECANCELLED;
    case 3: return AHA_EINVAL;
    case 4: return AHA_ETIMEOUT;
    case 5: return AHA_ENOTFOUND;
    case 6: return AHA_EEXIST;
    case 7: return AHA_EPERM;
    case 8: return AHA_ELIMIT;
    case 9: return AHA_EPRECOND;
    case 11: return AHA_EINVAL;
    case 12: return AHA_EUNSUPPORTED;
    case 14: return AHA_EUNAVAILABLE;
    case 16: return AHA_EUNAUTH;
    case 15: return AHA_EIO;
    default: return AHA_EINTERNAL; /* UNKNOWN, ABORTED, INTERNAL */
    }
}

/* grpc_init/grpc_shutdown are refcounted by gRPC itself; this wrapper only keeps the
 * pairing in one place. */
void aha__rpc_acquire(void) { grpc_init(); }
void aha__rpc_release(void) { grpc_shutdown(); }
