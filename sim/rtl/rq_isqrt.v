`timescale 1ns/1ps
// repq-hw reference RTL: exact integer square root, restoring digit-by-digit (docs/ops/isqrt.md).
// One result bit per clock, 32 clocks: r = floor(sqrt(n)) for n in [0, 2^62).
//   for i = 31 downto 0:
//       rem  = (rem << 2) | next bit pair of n;  root = root << 1;  trial = (root << 1) | 1
//       if rem >= trial: rem -= trial; root |= 1
module rq_isqrt (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire [63:0] n,
    output reg         busy,
    output reg         done,
    output reg  [31:0] root
);
    reg [63:0] nsh;       // bit pairs leave at the top
    reg [35:0] rem;       // <= 2 * root < 2^33
    reg [5:0]  cnt;
    wire [35:0] rem_t   = {rem[33:0], nsh[63:62]};
    wire [31:0] root_t  = {root[30:0], 1'b0};
    wire [35:0] trial_w = {3'b000, root_t, 1'b1};
    wire        take    = (rem_t >= trial_w);
    always @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0;
            done <= 1'b0;
        end else begin
            done <= 1'b0;
            if (start && !busy) begin
                nsh  <= n;
                rem  <= 36'd0;
                root <= 32'd0;
                cnt  <= 6'd32;
                busy <= 1'b1;
            end else if (busy) begin
                if (cnt != 6'd0) begin
                    rem  <= take ? rem_t - trial_w : rem_t;
                    root <= take ? (root_t | 32'd1) : root_t;
                    nsh  <= {nsh[61:0], 2'b00};
                    cnt  <= cnt - 6'd1;
                end else begin
                    busy <= 1'b0;
                    done <= 1'b1;
                end
            end
        end
    end
endmodule
