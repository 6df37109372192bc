{
  "targets": [
    {
      "target_name": "awq",
      "sources": ["<!@(node native/sources.cjs core addon)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20", "-O2"],
      "cflags": ["-O3", "-fno-math-errno"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fno-math-errno", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "MACOSX_DEPLOYMENT_TARGET": "11.0",
        "OTHER_CFLAGS": ["-O3", "-fno-math-errno", "-ffp-contract=off"]
      },
      "conditions": [
        # Node dlcloses an addon when the last worker_thread that loaded it exits; the addon's job
        # and compute threads (detached, process-wide) must never return into unmapped code.
        ["OS=='linux'", {
          "ldflags": ["-Wl,-z,nodelete"]
        }],
        ["target_arch!='x64' and target_arch!='ia32'", {
          "cflags": ["-ffp-contract=off"],
          "cflags_cc": ["-ffp-contract=off"]
        }]
      ]
    }
  ]
}
