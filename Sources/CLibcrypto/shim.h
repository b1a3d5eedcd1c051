// Only the digest API: SHA-256 of whole files (inspect --checksum).
#include <openssl/evp.h>
