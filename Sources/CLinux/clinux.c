#include "clinux.h"
int cl_dummy(void){return 0;}
