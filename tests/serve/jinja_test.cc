#include "gtest/gtest.h"
#include "serve/jinja.h"
