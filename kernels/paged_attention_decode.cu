// Placeholder: being written (see paged_attention.h for the contract).
#include "kernels/paged_attention.h"
