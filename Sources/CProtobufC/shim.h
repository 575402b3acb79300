// libprotobuf-c (Debian libprotobuf-c-dev), linked through pkg-config.
#include <protobuf-c/protobuf-c.h>
