/* The table of ggml types normscope quantizes: one line per type, defined in its family's file. */
#include "qtypes.h"

extern const ns_qtype NS_QTYPE_F16, NS_QTYPE_BF16;                                        /* q_float.c */
extern const ns_qtype NS_QTYPE_Q4_0, NS_QTYPE_Q4_1, NS_QTYPE_Q5_0, NS_QTYPE_Q5_1, NS_QTYPE_Q8_0;  /* q_legacy.c */
extern const ns_qtype NS_QTYPE_Q2_K, NS_QTYPE_Q3_K, NS_QTYPE_Q4_K, NS_QTYPE_Q5_K, NS_QTYPE_Q6_K;  /* q_k.c */
extern const ns_qtype NS_QTYPE_IQ4_NL, NS_QTYPE_IQ4_XS;                                   /* q_iq4.c */
extern const ns_qtype NS_QTYPE_IQ3_XXS, NS_QTYPE_IQ3_S;                                   /* q_iq3.c */
extern const ns_qtype NS_QTYPE_IQ2_XXS, NS_QTYPE_IQ2_XS, NS_QTYPE_IQ2_S;                  /* q_iq2.c */
extern const ns_qtype NS_QTYPE_IQ1_S, NS_QTYPE_IQ1_M;                                     /* q_iq1.c */
extern const ns_qtype NS_QTYPE_TQ1_0, NS_QTYPE_TQ2_0;                                     /* q_ternary.c */
extern const ns_qtype NS_QTYPE_MXFP4, NS_QTYPE_NVFP4;                                     /* q_fp4.c */
extern const ns_qtype NS_QTYPE_Q1_0;                                                      /* q_q1.c */

const ns_qtype *const NS_QTYPES[] = {
    &NS_QTYPE_F16,    &NS_QTYPE_BF16,
    &NS_QTYPE_Q4_0,   &NS_QTYPE_Q4_1,   &NS_QTYPE_Q5_0,  &NS_QTYPE_Q5_1, &NS_QTYPE_Q8_0,
    &NS_QTYPE_Q2_K,   &NS_QTYPE_Q3_K,   &NS_QTYPE_Q4_K,  &NS_QTYPE_Q5_K, &NS_QTYPE_Q6_K,
    &NS_QTYPE_IQ4_NL, &NS_QTYPE_IQ4_XS,
    &NS_QTYPE_IQ3_XXS, &NS_QTYPE_IQ3_S,
    &NS_QTYPE_IQ2_XXS, &NS_QTYPE_IQ2_XS, &NS_QTYPE_IQ2_S,
    &NS_QTYPE_IQ1_S,  &NS_QTYPE_IQ1_M,
    &NS_QTYPE_TQ1_0,  &NS_QTYPE_TQ2_0,
    &NS_QTYPE_MXFP4,  &NS_QTYPE_NVFP4,
    &NS_QTYPE_Q1_0,
};
const int NS_N_QTYPES = (int)(sizeof NS_QTYPES / sizeof NS_QTYPES[0]);

/* Activation types: what ggml-cpu quantizes a matmul's input to for the weight type's dot product
 * (type_traits_cpu[].vec_dot_type). No weight is stored in them: `qtypes()` lists NS_QTYPES only, and
 * quantize/dequantize find these too. Q8_0, also an activation type, is a weight type above. */
extern const ns_qtype NS_QTYPE_Q8_1;                                                      /* q_legacy.c */
extern const ns_qtype NS_QTYPE_Q8_K;                                                      /* q_k.c */

const ns_qtype *const NS_ACT_QTYPES[] = {&NS_QTYPE_Q8_1, &NS_QTYPE_Q8_K};
const int NS_N_ACT_QTYPES = (int)(sizeof NS_ACT_QTYPES / sizeof NS_ACT_QTYPES[0]);

const ns_qtype *ns_qtype_find(const char *name) {
    for (int i = 0; i < NS_N_QTYPES; i++)
        if (strcmp(NS_QTYPES[i]->name, name) == 0)
            return NS_QTYPES[i];
    for (int i = 0; i < NS_N_ACT_QTYPES; i++)
        if (strcmp(NS_ACT_QTYPES[i]->name, name) == 0)
            return NS_ACT_QTYPES[i];
    return NULL;
}
