/* Reads rows of features as CSV (a header line; `scale` multiplies every value; the
 * label column, if named, is skipped), runs the model compiled by `nnc build`, and
 * prints each row's predicted class, one per line. Error codes are checked too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits_mlp.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: predict ROWS.csv SCALE\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    float scale = strtof(argv[2], NULL);
    char line[65536];
    if (!fgets(line, sizeof line, f)) return 2;
    /* Which columns are features: all but one named `label`. */
    int label_col = -1, cols = 0;
    for (char *t = strtok(line, ",\r\n"); t; t = strtok(NULL, ",\r\n"), cols++)
        if (strcmp(t, "label") == 0) label_col = cols;
    size_t cap = 1024, rows = 0;
    float *x = malloc(cap * DIGITS_MLP_X_SIZE * sizeof(float));
    while (fgets(line, sizeof line, f)) {
        if (rows == cap) {
            cap *= 2;
            x = realloc(x, cap * DIGITS_MLP_X_SIZE * sizeof(float));
        }
        int c = 0, k = 0;
        for (char *t = strtok(line, ",\r\n"); t; t = strtok(NULL, ",\r\n"), c++) {
            if (c == label_col) continue;
            if (k < DIGITS_MLP_X_SIZE) x[rows * DIGITS_MLP_X_SIZE + k++] = strtof(t, NULL) * scale;
        }
        if (k != DIGITS_MLP_X_SIZE) {
            fprintf(stderr, "row %zu has %d features\n", rows + 1, k);
            return 2;
        }
        rows++;
    }
    fclose(f);
    float *y = malloc(rows * DIGITS_MLP_OUTPUT_SIZE * sizeof(float));
    if (digits_mlp_forward(NULL, y, rows) != DIGITS_MLP_EINVAL) return 3;
    if (digits_mlp_forward(x, NULL, rows) != DIGITS_MLP_EINVAL) return 3;
    if (digits_mlp_forward(x, y, 0) != DIGITS_MLP_EINVAL) return 3;
    int rc = digits_mlp_forward(x, y, rows);
    if (rc != DIGITS_MLP_OK) {
        fprintf(stderr, "forward returned %d\n", rc);
        return 4;
    }
    for (size_t i = 0; i < rows; i++) {
        int best = 0;
        for (int j = 1; j < DIGITS_MLP_OUTPUT_SIZE; j++)
            if (y[i * DIGITS_MLP_OUTPUT_SIZE + j] > y[i * DIGITS_MLP_OUTPUT_SIZE + best]) best = j;
        printf("%d\n", best);
    }
    free(x);
    free(y);
    return 0;
}
