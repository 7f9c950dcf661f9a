/* UUIDv7 identifiers (RFC 9562): 48-bit ms timestamp, then random bits.
 * Ids made by one process are strictly increasing, so ordering by id is
 * ordering by creation time. */
#ifndef JP_CORE_UUID_H
#define JP_CORE_UUID_H

#include <stdbool.h>

#define JP_UUID_STR_LEN 36  /* without the terminator */

/* Writes a new lowercase UUIDv7 string into out (37 bytes). Thread-safe. */
void jp_uuid7(char out[JP_UUID_STR_LEN + 1]);

/* True if s is a canonical UUID string (8-4-4-4-12 hex, any version). */
bool jp_uuid_valid(const char *s);

#endif
