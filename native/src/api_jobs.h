// What the generation entry points of the C API share: dgemma_generate_options and the sampler
// parameters turned into the core's job, and its statistics into a dgemma_generate_result.
#pragma once

#include <cstdint>
#include <vector>

#include "api_types.h"
#include "dgemma.h"
#include "scheduler.h"

namespace dg {

void require(bool ok, const char *message);  // DGEMMA_ERR_INVALID_ARGUMENT unless ok
SamplerParams to_internal(const dgemma_sampler_params &p);
// The job for one sequence (no session or prompt yet); `fixed_store` keeps its fixed mask as int8.
GenerateJob make_job(const dgemma_model &model, const dgemma_sampler_params &params, int64_t max_new_tokens,
                     const dgemma_generate_options *options, int32_t *out_tokens, std::vector<int8_t> &fixed_store);
void store_result(const GenerateStats &st, dgemma_generate_result *result);

}  // namespace dg
