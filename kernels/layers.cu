// Placeholder: being written (see layers.h for the contract).
#include "kernels/layers.h"
