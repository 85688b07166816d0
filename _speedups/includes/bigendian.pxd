# cython: language_level=3
"""Network byte order loads and stores on raw pointers, shared by the wire codecs.

Inline only (no module behind this file): callers check bounds before they load or store.
"""

from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef inline uint16_t load_u16(const unsigned char* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t load_u32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8)
            | <uint32_t>p[3])


cdef inline uint64_t load_u64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>load_u32(p) << 32) | load_u32(p + 4)


cdef inline double load_f64(const unsigned char* p) noexcept nogil:
    cdef uint64_t bits = load_u64(p)
    cdef double value
    memcpy(&value, &bits, 8)
    return value


cdef inline double load_f32(const unsigned char* p) noexcept nogil:
    cdef uint32_t bits = load_u32(p)
    cdef float value
    memcpy(&value, &bits, 4)
    return value


cdef inline void store_u16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v


cdef inline void store_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline void store_u64(unsigned char* p, uint64_t v) noexcept nogil:
    store_u32(p, <uint32_t>(v >> 32))
    store_u32(p + 4, <uint32_t>v)


cdef inline void store_f64(unsigned char* p, double v) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &v, 8)
    store_u64(p, bits)
