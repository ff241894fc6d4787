// The opaque handles of the C API, shared by its translation units.
#pragma once

#include <memory>

#include "model.h"
#include "session.h"

struct dgemma_model {
    std::unique_ptr<dg::Model> model;
};

struct dgemma_session {
    std::unique_ptr<dg::Session> session;
};
