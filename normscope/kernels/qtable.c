/* The table of ggml types normscope quantizes: one line per type, defined in its family's file. */
#include "qtypes.h"

extern const ns_qtype NS_QTYPE_F16, NS_QTYPE_BF16;
extern const ns_qtype NS_QTYPE_Q8_0;
extern const ns_qtype NS_QTYPE_IQ3_XXS, NS_QTYPE_IQ3_S;

const ns_qtype *const NS_QTYPES[] = {
    &NS_QTYPE_F16,
    &NS_QTYPE_BF16,
    &NS_QTYPE_Q8_0,
    &NS_QTYPE_IQ3_XXS,
    &NS_QTYPE_IQ3_S,
};
const int NS_N_QTYPES = (int)(sizeof NS_QTYPES / sizeof NS_QTYPES[0]);

const ns_qtype *ns_qtype_find(const char *name) {
    for (int i = 0; i < NS_N_QTYPES; i++)
        if (strcmp(NS_QTYPES[i]->name, name) == 0)
            return NS_QTYPES[i];
    return NULL;
}
