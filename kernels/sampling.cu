// Placeholder: being written (see sampling.h for the contract).
#include "kernels/sampling.h"
