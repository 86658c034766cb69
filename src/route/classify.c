/* Placeholder: replaced by the module implementation. */
typedef int pgrelay_placeholder_t;
