// The real llama-quantize (tools/quantize/quantize.cpp of the pinned llama.cpp,
// compiled in unchanged), plus one extra mode for the parity tests:
//
//   llama-quantize --dump-imatrix FILE OUT.json [--include-weights X]... [--exclude-weights X]...
//
// runs quantize.cpp's own prepare_imatrix (load_imatrix + filters) and writes
// the vectors it would hand to llama_model_quantize as JSON: names and dataset
// names as hex bytes, values as the bits of each f32, and the chunk count.
// Every other command line goes to llama-quantize's main function.
#include "quantize.cpp"

#include <cinttypes>

static std::string hex(const std::string & s) {
    static const char * digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

int main(int argc, char ** argv) {
    if (argc >= 4 && std::string(argv[1]) == "--dump-imatrix") {
        std::vector<std::string> include, exclude;
        for (int i = 4; i + 1 < argc; i += 2) {
            std::string flag = argv[i];
            if (flag == "--include-weights") {
                include.emplace_back(argv[i + 1]);
            } else if (flag == "--exclude-weights") {
                exclude.emplace_back(argv[i + 1]);
            } else {
                fprintf(stderr, "unknown flag %s\n", argv[i]);
                return 2;
            }
        }
        std::vector<std::string> datasets;
        std::unordered_map<std::string, std::vector<float>> data;
        const int chunks = prepare_imatrix(argv[2], datasets, include, exclude, data);
        std::map<std::string, std::vector<float>> sorted(data.begin(), data.end());
        FILE * f = fopen(argv[3], "w");
        if (!f) {
            return 2;
        }
        fprintf(f, "{\"chunks\": %d, \"datasets\": [", chunks);
        for (size_t i = 0; i < datasets.size(); ++i) {
            fprintf(f, "%s\"%s\"", i ? ", " : "", hex(datasets[i]).c_str());
        }
        fprintf(f, "], \"entries\": {");
        bool first = true;
        for (const auto & [name, v] : sorted) {
            fprintf(f, "%s\"%s\": [", first ? "" : ", ", hex(name).c_str());
            first = false;
            for (size_t i = 0; i < v.size(); ++i) {
                uint32_t bits;
                memcpy(&bits, &v[i], 4);
                fprintf(f, "%s%" PRIu32, i ? "," : "", bits);
            }
            fprintf(f, "]");
        }
        fprintf(f, "}}\n");
        fclose(f);
        return 0;
    }
    return llama_quantize(argc, argv);
}
