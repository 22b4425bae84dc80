/* Reads rows of features as CSV (a header line; `scale` multiplies every value; the
 * label column, if named, is skipped), runs a model compiled by `nnc build`, and prints
 * each row's predicted class and outputs as `nnc predict` does. Its error codes are
 * checked too. Build with -DPREFIX=digits_mlp -DUPPER=DIGITS_MLP (the model's names), and
 * -DLOAD for an object built with `--weights file`, whose weights path comes third;
 * -DEINDEX=UPPER_EINDEX for a model with an embedding, whose bad ids are checked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR2(a) #a
#define STR(a) STR2(a)
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#include STR(PREFIX.h)
#define FORWARD CAT(PREFIX, _forward)
#define X_SIZE CAT(UPPER, _X_SIZE)
#define Y_SIZE CAT(UPPER, _OUTPUT_SIZE)
#define OK CAT(UPPER, _OK)
#define EINVAL_ CAT(UPPER, _EINVAL)

int main(int argc, char **argv) {
#ifdef LOAD
    if (argc != 4) {
        fprintf(stderr, "usage: predict ROWS.csv SCALE WEIGHTS.safetensors\n");
        return 2;
    }
#else
    if (argc != 3) {
        fprintf(stderr, "usage: predict ROWS.csv SCALE\n");
        return 2;
    }
#endif
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
    float *x = malloc(cap * X_SIZE * sizeof(float));
    while (fgets(line, sizeof line, f)) {
        if (rows == cap) {
            cap *= 2;
            x = realloc(x, cap * X_SIZE * sizeof(float));
        }
        int c = 0, k = 0;
        for (char *t = strtok(line, ",\r\n"); t; t = strtok(NULL, ",\r\n"), c++) {
            if (c == label_col) continue;
            if (k < X_SIZE) x[rows * X_SIZE + k++] = strtof(t, NULL) * scale;
        }
        if (k != X_SIZE) {
            fprintf(stderr, "row %zu has %d features\n", rows + 1, k);
            return 2;
        }
        rows++;
    }
    fclose(f);
    float *y = malloc(rows * Y_SIZE * sizeof(float));
#ifdef LOAD
    /* Nothing runs before the weights are loaded; a bad file is refused with a reason and
     * leaves no weights behind; then the real file. */
    if (FORWARD(x, y, rows) != CAT(UPPER, _ENOWEIGHTS)) return 5;
    if (CAT(PREFIX, _load)("/nonexistent/w.safetensors") != CAT(UPPER, _EIO)) return 6;
    if (strstr(nnc_rt_error(), "cannot read") == NULL) return 7;
    if (CAT(PREFIX, _load)(argv[1]) != CAT(UPPER, _EIO)) return 8; /* a CSV, not safetensors */
    if (FORWARD(x, y, rows) != CAT(UPPER, _ENOWEIGHTS)) return 9;
    int lr = CAT(PREFIX, _load)(argv[3]);
    if (lr != OK) {
        fprintf(stderr, "load returned %d: %s\n", lr, nnc_rt_error());
        return 10;
    }
#endif
    if (FORWARD(NULL, y, rows) != EINVAL_) return 3;
    if (FORWARD(x, NULL, rows) != EINVAL_) return 3;
    if (FORWARD(x, y, 0) != EINVAL_) return 3;
    int rc = FORWARD(x, y, rows);
    if (rc != OK) {
        fprintf(stderr, "forward returned %d\n", rc);
        return 4;
    }
#ifdef EINDEX
    /* An id outside the embedding's table: EINDEX, and the next call is clean again. */
    float kept = x[0];
    x[0] = 1000.0f;
    if (FORWARD(x, y, rows) != EINDEX) return 11;
    x[0] = kept;
    if (FORWARD(x, y, rows) != OK) return 12;
#endif
    for (size_t i = 0; i < rows; i++) {
        int best = 0;
        for (int j = 1; j < Y_SIZE; j++)
            if (y[i * Y_SIZE + j] > y[i * Y_SIZE + best]) best = j;
        printf("%d", best);
        for (int j = 0; j < Y_SIZE; j++) printf(",%.9g", y[i * Y_SIZE + j]);
        printf("\n");
    }
    free(x);
    free(y);
    return 0;
}
