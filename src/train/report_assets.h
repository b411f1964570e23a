#pragma once
// The run report's script and style sheet (train/report.js, train/report.css), built into the
// program from those files so that a report needs nothing beside itself.

namespace parallama {

extern const char* const kReportJs;
extern const char* const kReportCss;

}  // namespace parallama
